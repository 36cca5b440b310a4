#!/usr/bin/env python3
"""Small SentencePiece unigram models and the ids the `sentencepiece` package gives for a set of test strings.

The C tokenizer (lib/sentencepiece.h) is checked against these files by `make test`, without Python:
  vectors/spm_<name>.model      four unigram models trained here: {nmt_nfkc, identity} normaliser x byte fallback
                                {on, off}; one of them also has two user-defined symbols
  vectors/spm_cases.txt         one test string per line as hex of its UTF-8 bytes, then for every model the ids of
                                sentencepiece's own `encode` (nothing added or removed)
  vectors/spm_wan.txt           Wan's text cleaning and end-of-sequence/truncation on the same strings, for one model:
                                hex(input) TAB hex(cleaned, without ftfy) TAB ids the encoder sees (cleaned, encoded,
                                cut to max_len - 1, EOS appended), with max_len 512 and 16
Usage: python dev/peer/make_spm_models.py --out dev/peer/vectors      (about 20 s on one core)
Versions used are printed and written to vectors/spm_versions.txt.
"""
import argparse, html, os, random, sys

import regex  # Wan's tokenizers.py uses `regex` (its \s is Unicode White_Space), not `re`
import sentencepiece as spm

SUBJECTS = ["a cat", "a dog", "an astronaut", "a red car", "a panda", "two people", "a golden retriever", "a teddy bear",
            "a horse", "a bicycle", "an elephant", "a couple", "a chef", "a surfer", "the Eiffel Tower", "a koala",
            "a shark", "a boat", "a train", "a butterfly", "an old man", "a little girl", "a robot", "a squirrel"]
ACTIONS = ["running on the grass", "playing guitar", "riding a bike", "swimming in the ocean", "walking in the rain",
           "dancing under the stars", "eating pizza", "reading a book", "flying over the city", "sleeping on a sofa",
           "drinking coffee", "jumping over a fence", "cooking in the kitchen", "skiing down a mountain"]
STYLES = ["in Van Gogh style", "in cyberpunk style", "oil painting", "in black and white", "with a tilt-shift effect",
          "in super slow motion", "zoom in", "pan left", "camera rotating around", "4K, high quality",
          "at sunset", "in the style of Ukiyo-e", "watercolor painting", "by Hokusai", "pixel art"]
MULTI = ["Un chat noir court sur l'herbe près du café.", "Ein Hund läuft über die Straße, schön und groß.",
         "El niño está jugando en la playa con su mamá.", "Ångström, naïve, façade, crème brûlée, jalapeño.",
         "一只猫在草地上奔跑。", "桜の木の下で猫が寝ている。", "고양이가 잔디 위를 달린다.", "Кошка бежит по траве.",
         "Η γάτα τρέχει στο γρασίδι.", "القطة تجري على العشب", "बिल्ली घास पर दौड़ रही है।", "ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ １２３",
         "Number 42, 3.14159, 2024-06-01, 10:30 am, $9.99, 50% off!", "e-mail: someone@example.com, https://x.org/a?b=c"]


def corpus(rng, n):
    lines = []
    for _ in range(n):
        r = rng.random()
        if r < 0.75:
            s = f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)}"
            if rng.random() < 0.6: s += f", {rng.choice(STYLES)}"
            lines.append(s[0].upper() + s[1:] if rng.random() < 0.5 else s)
        else:
            lines.append(rng.choice(MULTI))
    return lines


# prompts written here in the style of VBench's, and strings that stress the normaliser and the lattice
PROMPTS = [
    "a cat running on the grass", "A panda drinking coffee in a cafe in Paris, in Van Gogh style",
    "an astronaut flying in space, zoom in", "A teddy bear washing the dishes, 4K, high quality",
    "a boat sailing leisurely along the Seine River with the Eiffel Tower in background, super slow motion",
    "Close up of grapes on a rotating table.", "Turtle swimming in ocean.", "a shark is swimming in the ocean, tilt up",
    "A couple in formal evening wear going home get caught in a heavy downpour with umbrellas",
    "a bicycle accelerating to gain speed", "The bund Shanghai, oil painting", "a koala bear playing piano in the forest",
]
HARD = [
    "", " ", "   ", "\t\n", "a", "café naïve façade Ångström crème brûlée", "e\u0301 vs \u00e9 (combining acute)",
    "一只猫在草地上奔跑", "桜の木の下で猫が寝ている", "고양이가 잔디 위를 달린다", "Кошка бежит", "ﬁne ﬂour ① Ⅻ ㍿ ℃",
    "ｆｕｌｌｗｉｄｔｈ　ｓｐａｃｅ", "emoji 🐱🚀👍🏽 👨‍👩‍👧 🇫🇷", "ctrl\x01\x02\x1b[31mred\x7f del", "zero\u200bwidth\u200djoiner\ufeffbom",
    "tab\tnew\nline\r\ncarriage", "repeated     spaces   inside", "  leading and trailing  ", "nbsp\u00a0here\u3000ideographic",
    "line\u2028separator\u2029para\u0085nel", "fs\x1cgs\x1drs\x1eus\x1f", "&amp; &lt;b&gt; &quot;q&quot; &#39;s &#x4e2d; &amp;amp; &copy &nbsp;x",
    "“curly” ‘quotes’ „low“ — dash… ellipsis", "unknown ☃ ♞ ⚙ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈", "\ufffd replacement char", "Tom's  & Jerry's",
    "ALL CAPS SHOUTING!!!", "123456789012345678901234567890", "<sep> and <mask> user symbols<sep>x", "▁ lower one eighth block",
    "mixed 混合 text テキスト with 한국어 and العربية", "\U0001F600" * 40,
    " ".join(["a cat running on the grass, in Van Gogh style"] * 120),   # very long: ~6000 characters
    "ü" * 300 + "字" * 300,
]


def hexs(s): return s.encode("utf-8").hex()


def wan_clean(text):
    # Wan2.1 wan/modules/tokenizers.py: basic_clean (ftfy.fix_text, html.unescape twice, strip) then whitespace_clean
    # (regex \s+ -> ' ', strip). ftfy is left out here on purpose: the C code does not reproduce it.
    text = html.unescape(html.unescape(text)).strip()
    return regex.sub(r"\s+", " ", text).strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="dev/peer/vectors")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(0)
    tmp = os.path.join(a.out, "spm_corpus.tmp")
    with open(tmp, "w", encoding="utf-8") as f: f.write("\n".join(corpus(rng, 4000)) + "\n")
    models = [("nfkc_bf", "nmt_nfkc", True, []), ("nfkc", "nmt_nfkc", False, ["<sep>", "<mask>"]),
              ("identity_bf", "identity", True, []), ("identity", "identity", False, [])]
    sps = []
    for name, rule, bf, uds in models:
        prefix = os.path.join(a.out, f"spm_{name}")
        spm.SentencePieceTrainer.train(input=tmp, model_prefix=prefix, model_type="unigram", vocab_size=900 if bf else 600, hard_vocab_limit=False,
                                       normalization_rule_name=rule, byte_fallback=bf, user_defined_symbols=uds,
                                       character_coverage=0.995, num_threads=1, seed_sentencepiece_size=100000,
                                       minloglevel=2, unk_id=2, eos_id=1, bos_id=-1, pad_id=0)  # umT5's ids: pad 0, eos 1, unk 2
        os.remove(prefix + ".vocab")
        sps.append((name, spm.SentencePieceProcessor(model_file=prefix + ".model")))
    os.remove(tmp)
    cases = PROMPTS + HARD
    with open(os.path.join(a.out, "spm_cases.txt"), "w") as f:
        f.write("# hex(utf8 input)" + "".join(f"\t{n}" for n, _ in sps) + "\n")
        for s in cases:
            f.write(hexs(s) + "".join("\t" + " ".join(map(str, sp.encode(s))) for _, sp in sps) + "\n")
    sp = sps[0][1]
    eos = sp.eos_id()
    with open(os.path.join(a.out, "spm_wan.txt"), "w") as f:
        f.write(f"# model spm_{sps[0][0]}.model; hex(input) TAB hex(cleaned) TAB max_len TAB ids (cleaned, encoded, first max_len-1, EOS {eos})\n")
        for s in cases:
            c = wan_clean(s)
            for max_len in (512, 16):
                ids = sp.encode(c)[: max_len - 1] + [eos]
                f.write(f"{hexs(s)}\t{hexs(c)}\t{max_len}\t{' '.join(map(str, ids))}\n")
    import ftfy
    changed = [s for s in cases if ftfy.fix_text(s) != s]
    vers = (f"python {sys.version.split()[0]}\nsentencepiece {spm.__version__}\nregex {regex.__version__}\n"
            f"ftfy {ftfy.__version__} (only to report which cases it would change: {len(changed)} of {len(cases)})\n")
    with open(os.path.join(a.out, "spm_versions.txt"), "w") as f: f.write(vers)
    print(vers, end="")
    for s in changed: print("  ftfy changes", repr(s[:60]), "->", repr(ftfy.fix_text(s)[:60]))
    for n, p in sps: print(f"  spm_{n}.model: {p.get_piece_size()} pieces, {os.path.getsize(os.path.join(a.out, f'spm_{n}.model'))} bytes")


if __name__ == "__main__":
    main()
