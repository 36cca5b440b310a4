// world/score_cond_tests.h: the per-caption distance to a target and the diversity figure (world/score.h
// score_cond) rank planted generators correctly. `./test_tmd test measure`, in `make test` (about a second).
//
// The target is the world itself: for each of 16 captions of the tiny world, 8 renders of the caption (the caption
// fixes every attribute; each render draws a fresh start position, as the world's own sampler does). Against it:
//   the teacher itself   8 further, independent renders of the same caption (what a perfect student would give)
//   collapsed            one render of the caption, repeated 8 times (a student that ignores its noise)
//   the target's mean    the target's mean features for the caption, 8 times (the case that beat every student on
//                        the pooled Fréchet distance); and the mean clip of the target's 8 renders (pixel average)
//   caption-blind        8 renders of another caption of the set (caption c + 1): over all captions the same mix
//                        of clips as the teacher's, so the pooled distance cannot tell it from the teacher
//   noise-only           clamped Gaussian noise (σ 0.5): a generator that outputs its noise
// The assertions: every planted case is farther from the target than the teacher's second draw by more than 3
// bootstrap standard errors of the paired difference (resampling captions); the teacher's own distance is within
// 3 standard errors of 0 (the measure is unbiased); collapse shows in the diversity figure; and the caption-blind
// case is invisible to the same distance computed with the captions pooled (so it is the per-caption comparison
// that catches it).
#pragma once
#include "world.h"
#include "score.h"
#include "../lib/testing.h"

#define SCT_CAPS 16
#define SCT_K 8    // generated clips per caption (as ./test_tmd distill scores them)
#define SCT_KT 8   // target clips per caption (as ./test_tmd distill draws them)

// k renders of scene s with fresh positions (stream index base + j), into clips [k, 3, T, H, W]
static inline void sct_renders(float* clips, const WorldScene* s, int k, uint64_t base, int T, int H, int W) {
    size_t numel = (size_t)3 * T * H * W;
    for (int j = 0; j < k; j++) {
        WorldScene d = *s;
        WRng r = wrng_seed(77, 5, base + (uint64_t)j);
        for (int tries = 0; tries < 1000; tries++) { // redraw placements until the objects do not collide
            for (int o = 0; o < d.n_obj; o++) world_place(&r, &d.obj[o]);
            if (d.n_obj < 2 || !world_objects_collide(&d.obj[0], &d.obj[1])) break;
        }
        world_render_clip(clips + (size_t)j * numel, &d, T, H, W);
    }
}

static inline void sct_analyse(ScoreClip* out, const float* clips, int n, int T, int H, int W) {
    size_t numel = (size_t)3 * T * H * W;
    for (int i = 0; i < n; i++) score_clip(&out[i], clips + (size_t)i * numel, T, H, W, NULL);
}

static inline void test_score_cond(void) {
    printf("measure: the per-caption distance to a target ranks planted generators (tiny world, %d captions, %d "
           "clips each against %d target clips)\n",
           SCT_CAPS, SCT_K, SCT_KT);
    WorldConfig c = world_config_tiny();
    int T = c.T, H = c.H, W = c.W, n = SCT_CAPS;
    size_t numel = world_clip_numel(&c);
    WorldSet set;
    world_generate(&c, WORLD_ANY, n, 31, &set);
    WorldScene sc[SCT_CAPS];
    char err[ST_ERRLEN];
    for (int i = 0; i < n; i++) EXPECT(world_parse_caption(set.captions[i], &sc[i], err) == 0, "caption: %s", err);
    float* clips = (float*)malloc(sizeof(float) * numel * SCT_KT);
    ScoreClip* tgt = (ScoreClip*)malloc(sizeof(ScoreClip) * n * SCT_KT);
    enum { SELF, COLLAPSED, MEANFEAT, MEANCLIP, BLIND, NOISE, NCASE };
    const char* names[NCASE] = {"the teacher itself (2nd draw)", "collapsed (1 clip repeated)", "the target's mean features",
                                "the target's mean clip", "caption-blind (caption c+1)", "noise-only"};
    ScoreClip* gen[NCASE];
    for (int k = 0; k < NCASE; k++) gen[k] = (ScoreClip*)malloc(sizeof(ScoreClip) * n * SCT_K);
    for (int i = 0; i < n; i++) {
        ScoreClip* g;
        sct_renders(clips, &sc[i], SCT_KT, (uint64_t)i * 100, T, H, W); // the target
        sct_analyse(tgt + i * SCT_KT, clips, SCT_KT, T, H, W);
        // the target's mean clip (pixel average of its renders) and mean features
        float* mean = (float*)calloc(numel, sizeof(float));
        for (int j = 0; j < SCT_KT; j++)
            for (size_t e = 0; e < numel; e++) mean[e] += clips[(size_t)j * numel + e] / SCT_KT;
        g = gen[MEANCLIP] + i * SCT_K;
        sct_analyse(g, mean, 1, T, H, W);
        for (int j = 1; j < SCT_K; j++) g[j] = g[0];
        free(mean);
        g = gen[MEANFEAT] + i * SCT_K;
        memset(g, 0, sizeof(ScoreClip));
        for (int j = 0; j < SCT_KT; j++) {
            const ScoreClip* t = &tgt[i * SCT_KT + j];
            for (int f = 0; f < SC_NFEAT; f++) g[0].feat[f] += t->feat[f] / SCT_KT;
            g[0].travel_x += t->travel_x / SCT_KT;
            g[0].travel_y += t->travel_y / SCT_KT;
            g[0].mass_fill += t->mass_fill / SCT_KT;
        }
        for (int j = 1; j < SCT_K; j++) g[j] = g[0];
        sct_renders(clips, &sc[i], SCT_K, (uint64_t)i * 100 + 50, T, H, W); // the teacher's second draw
        sct_analyse(gen[SELF] + i * SCT_K, clips, SCT_K, T, H, W);
        g = gen[COLLAPSED] + i * SCT_K; // its first clip, four times
        for (int j = 0; j < SCT_K; j++) g[j] = gen[SELF][i * SCT_K];
        sct_renders(clips, &sc[(i + 1) % n], SCT_K, (uint64_t)i * 100 + 60, T, H, W);
        sct_analyse(gen[BLIND] + i * SCT_K, clips, SCT_K, T, H, W);
        WRng r = wrng_seed(78, 5, (uint64_t)i);
        for (size_t e = 0; e < numel * SCT_K; e++) {
            double v = 0.5 * wrng_normal(&r);
            clips[e] = (float)(v > 1 ? 1 : v < -1 ? -1 : v);
        }
        sct_analyse(gen[NOISE] + i * SCT_K, clips, SCT_K, T, H, W);
    }
    CondScore cs[NCASE], pooled[NCASE];
    double ed[NCASE][SCT_CAPS];
    printf("  %-30s %10s %8s %10s %8s %16s\n", "generator", "distance", "± se", "diversity", "± se",
           "pooled distance");
    for (int k = 0; k < NCASE; k++) {
        EXPECT(score_cond(&cs[k], ed[k], gen[k], SCT_K, tgt, SCT_KT, n, err) == 0, "%s: %s", names[k], err);
        // the same distance with the captions pooled (one "caption" holding every clip): what ignores captions sees
        EXPECT(score_cond(&pooled[k], NULL, gen[k], SCT_K * n, tgt, SCT_KT * n, 1, err) == 0, "%s: %s", names[k], err);
        printf("  %-30s %10.3f %8.3f %10.3f %8.3f %16.3f\n", names[k], cs[k].dist, cs[k].dist_se, cs[k].diversity,
               cs[k].diversity_se, pooled[k].dist);
    }
    // the teacher's second draw is at 0 up to sampling error (the estimate is unbiased) ...
    EXPECT(fabs(cs[SELF].dist) < 3 * cs[SELF].dist_se + 1e-9,
           "the teacher's own second draw is at %.3f from the target, more than 3 standard errors (%.3f) from 0",
           cs[SELF].dist, cs[SELF].dist_se);
    EXPECT(cs[SELF].diversity > 0.7 && cs[SELF].diversity < 1.3, "the teacher's diversity is %.3f, not about 1",
           cs[SELF].diversity);
    // ... and every planted case is clearly farther: by more than 3 paired bootstrap standard errors
    for (int k = 1; k < NCASE; k++) {
        double d = cs[k].dist - cs[SELF].dist, se = score_boot_se(ed[k], ed[SELF], n);
        printf("  %-30s is farther than the teacher by %.3f (paired se %.3f, %.1f se)\n", names[k], d, se,
               se > 0 ? d / se : 0);
        EXPECT(d > 3 * se && d > 0, "%s is not clearly farther from the target than the teacher: %+.3f (se %.3f)",
               names[k], d, se);
    }
    // collapse shows in the diversity figure
    EXPECT(cs[COLLAPSED].diversity < 0.05 && cs[MEANFEAT].diversity < 0.05,
           "a collapsed generator's diversity is %.3f / %.3f, not about 0", cs[COLLAPSED].diversity,
           cs[MEANFEAT].diversity);
    // the caption-blind generator has the teacher's mix of clips: pooled, it is as close as the teacher's own draw
    // (within a fifth of its per-caption margin), so only the per-caption comparison catches it
    double blind_margin = cs[BLIND].dist - cs[SELF].dist;
    EXPECT(fabs(pooled[BLIND].dist - pooled[SELF].dist) < 0.2 * blind_margin,
           "the caption-blind case is not marginal-right (pooled %.3f vs the teacher's %.3f): the planted case is "
           "wrong",
           pooled[BLIND].dist, pooled[SELF].dist);
    for (int k = 0; k < NCASE; k++) free(gen[k]);
    free(tgt);
    free(clips);
    world_set_free(&set);
}
