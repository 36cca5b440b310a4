// dev/tiny_wan_folder.c: a toy diffusers-style Wan2.1 folder for dev/prompt_chain_check.sh (sample_tmd --wan at toy
// size): transformer/ a random DiT of the tiny preset's blocks with Wan's 16 latent channels and the committed tiny
// umT5's width (text_dim 48; lib/random_params.h, wan.h's writer with its config in __metadata__), text_encoder/ the
// committed tiny umT5 (dev/peer/vectors/umt5_a: vocab 560, d_model 48), tokenizer/spiece.model its SentencePiece model
// (spm_nfkc_bf.model, 560 pieces), vae/ the committed tiny Wan VAE (vae_a: z_dim 16). Every part is random or tiny: the
// chain's mechanics only, nothing about quality. Not in make test (group "prompts" builds its own folder in-process).
//   cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L dev/tiny_wan_folder.c -o /tmp/tiny_wan_folder -lm
//   /tmp/tiny_wan_folder OUT          (run from the repository root: the committed parts are copied from dev/peer/vectors)
#include <sys/stat.h>
#include "../wan.h"
#include "../lib/random_params.h"

static int copy_file(const char* from, const char* to) {
    FILE* a = fopen(from, "rb"); FILE* b = fopen(to, "wb");
    if (!a || !b) { fprintf(stderr, "error: cannot copy %s to %s: %s (run from the repository root)\n", from, to, strerror(errno)); if (a) fclose(a); if (b) fclose(b); return 1; }
    char buf[65536]; size_t n; int ok = 1;
    while ((n = fread(buf, 1, sizeof(buf), a)) > 0) ok &= fwrite(buf, 1, n, b) == n;
    fclose(a); ok &= fclose(b) == 0;
    return !ok;
}

int main(int argc, char** argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s OUT\n", argv[0]); return 2; }
    const char* out = argv[1];
    char err[ST_ERRLEN], p[1200];
    const char* sub[4] = {"transformer", "text_encoder", "tokenizer", "vae"};
    mkdir(out, 0755);
    for (int k = 0; k < 4; k++) { snprintf(p, sizeof(p), "%s/%s", out, sub[k]); mkdir(p, 0755); }
    WanConfig c; wan_preset(&c, "tiny", err);
    c.in_dim = c.out_dim = 16; c.text_dim = 48;   // Wan's latent channels; the tiny umT5's width
    real* w = (real*)malloc(sizeof(real) * wan_num_params(&c));
    random_params(&c, w, 21);
    snprintf(p, sizeof(p), "%s/transformer/diffusion_pytorch_model.safetensors", out);
    const char* meta[] = {"note", "random toy DiT (dev/tiny_wan_folder.c)"};
    if (wan_save(p, &c, w, meta, 1, err)) { fprintf(stderr, "error: %s\n", err); return 1; }
    free(w);
    char q[1200];
    const char* from[4] = {"dev/peer/vectors/umt5_a/model.safetensors", "dev/peer/vectors/umt5_a/config.json", "dev/peer/vectors/spm_nfkc_bf.model",
                           "dev/peer/vectors/vae_a_diffusers.safetensors"};
    const char* to[4] = {"text_encoder/model.safetensors", "text_encoder/config.json", "tokenizer/spiece.model", "vae/diffusion_pytorch_model.safetensors"};
    for (int k = 0; k < 4; k++) { snprintf(q, sizeof(q), "%s/%s", out, to[k]); if (copy_file(from[k], q)) return 1; }
    printf("wrote %s: transformer/ (random DiT, %zu parameters, in/out 16, text_dim 48, text_len %d), text_encoder/ (umt5_a), "
           "tokenizer/spiece.model (spm_nfkc_bf), vae/ (vae_a)\n", out, wan_num_params(&c), c.text_len);
    return 0;
}
