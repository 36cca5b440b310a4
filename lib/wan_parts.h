// lib/wan_parts.h: the parts of a real Wan2.1 text-to-video model, found in a diffusers folder (sample_tmd --wan DIR)
// or given one by one, and the checks that must pass before any GPU work. Plain C (tested in `make test`, group
// "prompts").
//
// A diffusers Wan2.1 folder (Wan-AI/Wan2.1-T2V-1.3B-Diffusers, -14B-Diffusers) holds:
//   transformer/    the DiT (diffusion_pytorch_model*.safetensors, an index for the 14B)    --weights
//   text_encoder/   umT5-XXL's encoder (model-*.safetensors + model.safetensors.index.json) --text-encoder
//   tokenizer/      spiece.model (SentencePiece; the tokenizer.json beside it is not read)   --tokenizer
//   vae/            diffusion_pytorch_model.safetensors (the Wan2.1 VAE)                     --vae
// A flag given for a part wins over the folder's. A part the run needs and cannot find is an error naming the
// folder, the path looked for and the flag that gives it.
//
// The checks (wan_parts_check_text): the tokenizer's pieces must have embedding rows in the encoder (every id it
// emits is a row; a table padded past the pieces is normal: umT5-XXL's has 256,384 rows), and a table far larger than
// the vocabulary means another tokenizer (T5's 32k pieces against umT5's 256k rows); the encoder's width
// (d_model) must be the DiT's text_dim (Wan2.1: 4096), or its context would be read with the wrong stride.
#pragma once
#include <sys/stat.h>
#include <dirent.h>
#include "safetensors.h"
#include "sentencepiece.h"

#define WP_VOCAB_SLACK 1024   // embedding rows past the tokenizer's pieces still taken as padding

typedef struct {
    char transformer[1024], text_encoder[1024], tokenizer[1024], vae[1024];   // "" : not found / not given
} WanParts;

static inline int wp_exists(const char* p, int* is_dir) {
    struct stat sb;
    if (stat(p, &sb) != 0) return 0;
    if (is_dir) *is_dir = S_ISDIR(sb.st_mode);
    return 1;
}

// one part: the flag's value, else DIR/sub (a file inside it when `file` is given and present, else the folder)
static inline void wp_find_(char* dst, const char* flag_value, const char* dir, const char* sub, const char* file) {
    dst[0] = 0;
    if (flag_value && flag_value[0]) { snprintf(dst, 1024, "%s", flag_value); return; }
    if (!dir) return;
    char p[1024];
    snprintf(p, sizeof(p), "%s/%s", dir, sub);
    int is_dir = 0;
    if (!wp_exists(p, &is_dir) || !is_dir) return;
    if (file) {
        char f[1200];
        snprintf(f, sizeof(f), "%s/%s", p, file);
        if (wp_exists(f, NULL)) { snprintf(dst, 1024, "%.1023s", f); return; }
        if (!strcmp(file, "spiece.model")) return;   // the tokenizer is that one file
    }
    snprintf(dst, 1024, "%.1023s", p);
}

// the parts from dir (may be NULL) and the per-part flags (NULL or "": not given); `need` is a string of the parts
// this run needs ('d' DiT, 'e' text encoder, 't' tokenizer, 'v' VAE); a needed part not found is an error
static inline int wan_parts_find(WanParts* w, const char* dir, const char* weights, const char* text_encoder, const char* tokenizer,
                                 const char* vae, const char* need, char* err) {
    memset(w, 0, sizeof(*w));
    int is_dir = 0;
    if (dir && (!wp_exists(dir, &is_dir) || !is_dir)) {
        st_errf(err, "--wan %s: %s; expected a diffusers Wan2.1 folder (transformer/, text_encoder/, tokenizer/, vae/), e.g. "
                "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", dir, wp_exists(dir, NULL) ? "not a directory" : "no such directory");
        return 1;
    }
    wp_find_(w->transformer, weights, dir, "transformer", NULL);
    wp_find_(w->text_encoder, text_encoder, dir, "text_encoder", NULL);
    wp_find_(w->tokenizer, tokenizer, dir, "tokenizer", "spiece.model");
    wp_find_(w->vae, vae, dir, "vae", "diffusion_pytorch_model.safetensors");
    struct { char c; const char* path; const char* what; const char* sub; const char* flag; } parts[4] = {
        {'d', w->transformer, "the DiT", "transformer/", "--weights FILE"},
        {'e', w->text_encoder, "the umT5 text encoder", "text_encoder/", "--text-encoder DIR"},
        {'t', w->tokenizer, "the tokenizer", "tokenizer/spiece.model", "--tokenizer FILE"},
        {'v', w->vae, "the VAE", "vae/diffusion_pytorch_model.safetensors", "--vae FILE"}};
    for (int k = 0; k < 4; k++) {
        if (!strchr(need, parts[k].c)) continue;
        if (!parts[k].path[0]) {
            if (dir) st_errf(err, "--wan %s: no %s (%s%s%s); a diffusers Wan2.1 folder has transformer/, text_encoder/, tokenizer/ and vae/: "
                             "download the whole folder, or give %s by %s", dir, parts[k].sub, dir, dir[strlen(dir) - 1] == '/' ? "" : "/",
                             parts[k].sub, parts[k].what, parts[k].flag);
            else st_errf(err, "%s is needed: give --wan DIR (a diffusers Wan2.1 folder) or %s", parts[k].what, parts[k].flag);
            return 1;
        }
        if (!wp_exists(parts[k].path, NULL)) {
            st_errf(err, "%s: no such file or directory (%s, given by %s)", parts[k].path, parts[k].what, parts[k].flag);
            return 1;
        }
    }
    return 0;
}

// the text encoder's embedding table [rows, width] from its header (no weights read)
static inline int wan_parts_encoder_shape(const char* text_encoder, int64_t* rows, int64_t* width, char* err) {
    StSet s;
    if (st_set_open(&s, text_encoder, err)) return 1;
    const StTensor* e = st_set_find(&s, "shared.weight", NULL);
    if (!e) e = st_set_find(&s, "encoder.embed_tokens.weight", NULL);
    int rc = 0;
    if (!e || e->ndim != 2) {
        st_errf(err, "%s: no 2-D shared.weight or encoder.embed_tokens.weight; not a umT5 encoder (a diffusers Wan2.1 folder's text_encoder/)", text_encoder);
        rc = 1;
    } else { *rows = e->shape[0]; *width = e->shape[1]; }
    st_set_close(&s);
    return rc;
}

// the tokenizer (loaded) against the encoder's embedding, and the encoder's width against the DiT's text_dim
static inline int wan_parts_check_text(const char* text_encoder, const char* tokenizer, const SpmModel* sp, int dit_text_dim, char* err) {
    int64_t rows = 0, width = 0;
    if (wan_parts_encoder_shape(text_encoder, &rows, &width, err)) return 1;
    if (sp->n_pieces > rows || rows > (int64_t)sp->n_pieces + WP_VOCAB_SLACK) {
        st_errf(err, "tokenizer %s has %d pieces, but the text encoder %s embeds %lld tokens (expected %d to %d rows: padding past the "
                "pieces is normal, umT5-XXL has 256,384); they are not a pair: use the tokenizer/ and text_encoder/ of the same Wan2.1 folder",
                tokenizer, sp->n_pieces, text_encoder, (long long)rows, sp->n_pieces, sp->n_pieces + WP_VOCAB_SLACK);
        return 1;
    }
    if (width != dit_text_dim) {
        st_errf(err, "the text encoder %s is %lld wide (d_model), but the DiT reads contexts of text_dim %d; Wan2.1 pairs umT5-XXL (4096) "
                "with both DiTs: use the text_encoder/ of the model's own folder", text_encoder, (long long)width, dit_text_dim);
        return 1;
    }
    return 0;
}
