#!/usr/bin/env python3
"""Golden fixture for src/tokenizer/clip_bpe.rs: CLIP's tokenizer ids for >= 200 strings.

Pinned: Python 3.11.7, ftfy==6.3.1, regex==2026.5.9, transformers==4.46.3 (optional cross-check).
    pip install ftfy==6.3.1 regex==2026.5.9
Run from the crate root:
    python3 tests/golden/clip_tokenizer_fixture.py [path/to/bpe_simple_vocab_16e6.txt.gz]
Writes tests/golden/clip_tokenizer.json.

The reference is OpenAI CLIP's `clip/simple_tokenizer.py` (MIT licence, copyright (c) 2021
OpenAI), copied below without change of logic, plus `clip.tokenize` (context 77, truncate).
"""
import gzip
import html
import json
import os
import random
import sys
from functools import lru_cache

import ftfy
import regex as re

# ---------------------------------------------------------------- CLIP simple_tokenizer.py


@lru_cache()
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    cs = [chr(n) for n in cs]
    return dict(zip(bs, cs))


def get_pairs(word):
    pairs = set()
    prev_char = word[0]
    for char in word[1:]:
        pairs.add((prev_char, char))
        prev_char = char
    return pairs


def basic_clean(text, fix_text=ftfy.fix_text):
    text = fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text):
    text = re.sub(r'\s+', ' ', text)
    text = text.strip()
    return text


class SimpleTokenizer(object):
    def __init__(self, bpe_path):
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        merges = gzip.open(bpe_path).read().decode("utf-8").split('\n')
        merges = merges[1:49152 - 256 - 2 + 1]
        merges = [tuple(merge.split()) for merge in merges]
        vocab = list(bytes_to_unicode().values())
        vocab = vocab + [v + '</w>' for v in vocab]
        for merge in merges:
            vocab.append(''.join(merge))
        vocab.extend(['<|startoftext|>', '<|endoftext|>'])
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {'<|startoftext|>': '<|startoftext|>', '<|endoftext|>': '<|endoftext|>'}
        self.pat = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", re.IGNORECASE)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + '</w>',)
        pairs = get_pairs(word)

        if not pairs:
            return token + '</w>'

        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float('inf')))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break

                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            new_word = tuple(new_word)
            word = new_word
            if len(word) == 1:
                break
            else:
                pairs = get_pairs(word)
        word = ' '.join(word)
        self.cache[token] = word
        return word

    def encode(self, text, fix_text=ftfy.fix_text):
        bpe_tokens = []
        text = whitespace_clean(basic_clean(text, fix_text)).lower()
        for token in re.findall(self.pat, text):
            token = ''.join(self.byte_encoder[b] for b in token.encode('utf-8'))
            bpe_tokens.extend(self.encoder[bpe_token] for bpe_token in self.bpe(token).split(' '))
        return bpe_tokens

    def decode(self, tokens):
        text = ''.join([self.decoder[token] for token in tokens])
        text = bytearray([self.byte_decoder[c] for c in text]).decode('utf-8', errors="replace").replace('</w>', ' ')
        return text


def clip_tokenize(tok, text, context_length=77, truncate=False):
    """clip.tokenize for one string, as a list of ints (None where it would raise)."""
    sot, eot = tok.encoder["<|startoftext|>"], tok.encoder["<|endoftext|>"]
    tokens = [sot] + tok.encode(text) + [eot]
    if len(tokens) > context_length:
        if not truncate:
            return None
        tokens = tokens[:context_length]
        tokens[-1] = eot
    return tokens + [0] * (context_length - len(tokens))


# ------------------------------------------------------------------------- the strings


def fix_text_without_encoding_and_nfc(text):
    """What the Rust port implements: ftfy.fix_text less mojibake repair and NFC."""
    return ftfy.fix_text(text, fix_encoding=False, normalization=None)


HANDWRITTEN = [
    "", " ", "   ", "\t\n", "a", "A", "hello", "Hello World", "hello  world", "  leading and trailing  ",
    "a photo of a cat", "a photo of a dog.", "A photo of a CAT sitting on a mat.",
    "an armchair in the shape of an avocado", "an illustration of a baby daikon radish in a tutu walking a dog",
    "a red cube on top of a blue sphere", "a painting of a fox in the style of starry night",
    "the quick brown fox jumps over the lazy dog", "a store front that has the word 'openai' written on it",
    "an emoji of a baby penguin wearing a blue hat, red gloves, green shirt, and yellow pants",
    "it's", "It's a dog's life", "they're here", "we've", "I'm", "you'll", "he'd", "can't", "won't",
    "IT'S LOUD", "'s", "'sup", "rock'n'roll", "o'clock", "the 90's", "dogs'", "''", "'''s",
    "it\u2019s curly", "\u201cquoted\u201d text", "\u2018single\u2019", "don\u02bct",
    "hello, world!", "wait... what?!", "(parentheses) [brackets] {braces}", "semi;colon:colon",
    "email@example.com", "https://openai.com/blog/clip/", "C:\\Users\\name", "#hashtag @mention",
    "a+b=c", "50% off", "$9.99", "\u20ac100", "\u00a35", "#1 fan", "--double-dash--", "snake_case_name",
    "x^2 + y^2 = z^2", "1/2 cup", "100", "2023", "3.14159", "1,000,000", "007", "phone 555-1234",
    "16e6", "v1.2.3", "4k ultra hd", "10x zoom", "2nd place", "the 1990s",
    "\u00bd", "x\u00b2", "\u2167 chapter", "\u3007", "\u0661\u0662\u0663", "\u0968\u0966\u0968\u0969",
    "caf\u00e9", "na\u00efve r\u00e9sum\u00e9", "\u00c9COLE", "Stra\u00dfe", "se\u00f1or", "\u00e5ngstr\u00f6m",
    "Z\u00fcrich", "\u0141\u00f3d\u017a", "\u00e7a va", "\u00d8resund",
    "\u03b1\u03b2\u03b3", "\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3", "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440",
    "\u4f60\u597d\u4e16\u754c", "\u732b\u306e\u5199\u771f", "\u3053\u3093\u306b\u3061\u306f", "\u30ab\u30bf\u30ab\u30ca",
    "\uc548\ub155\ud558\uc138\uc694", "\u0645\u0631\u062d\u0628\u0627", "\u0645\u064f\u062d\u064e\u0645\u0651\u064e\u062f",
    "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd", "\u0928\u092e\u0938\u094d\u0924\u0947", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0", "\u0540\u0561\u0575\u0561\u057d\u057f\u0561\u0576",
    "\U0001f600", "\U0001f431 cat", "I \u2764\ufe0f NY", "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\U0001f44d\U0001f3fd", "\U0001f1fa\U0001f1f8", "\u2728sparkles\u2728", "\u2603 snow", "\u00a9 2021", "\u2122",
    "&amp;", "fish &amp; chips", "&lt;b&gt;bold&lt;/b&gt;", "&quot;hi&quot;", "&#39;quoted&#39;",
    "&amp;amp;", "&amp;amp;amp;amp;", "&#x27;hex&#x27;", "&#8217;", "&nbsp;space", "caf&eacute;",
    "&EACUTE;", "&copy 2020", "&ampersand", "AT&T", "R&D", "&notanentity;", "<b>tag</b> &amp; more",
    "1 < 2 &amp; 3 > 2", "&#0;", "&#128;", "&#x1F600;", "&#55296;", "&#1114112;", "&#65535;",
    "&hellip;", "&mdash;dash", "&Jscr;ohn", "a&nbsp;b", "&#12;form", "&#x41;&#x42;",
    "\uff2c\uff2f\uff35\uff24\u3000\uff2e\uff2f\uff29\uff33\uff25\uff33", "\uff35\uff80\uff70\uff9d",
    "\ufb01nance", "\ufb02u\ufb03e\ufb06", "\u0133s", "\u01c6ungla",
    "ctrl\x00char", "bell\x07", "del\x7f", "\x1b[36;44mblue\x1b[0m", "zero\u200bwidth", "bom\ufeffhere",
    "soft\u00adhyphen", "nb\u00a0sp", "em\u2003space", "line\u2028sep", "\r\nwindows\r\n", "tab\tseparated",
    "mixed\n\nnewlines\n", "ideo\u3000space", "\x85next", "c1\x80control", "c1\x93quotes\x94",
    "<|startoftext|>", "<|endoftext|>", "a <|endoftext|> b", "<|STARTOFTEXT|>", "<|endoftext|><|endoftext|>",
    "</w>", "hello</w>", "a<b", "!!!", "???", "...", "---", "___", "***", "~~~", "@@@", "<<>>", "\\\\",
    "!!'s", "it'\u017f", "<|\u017ftartoftext|>", "a\u0345b", "a'b", "'", "''''", "x'", "'ll'", "we'LL", "I'D", "it'S",
    "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "antidisestablishmentarianism", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "abababababababab",
    "ThIs Is MiXeD cAsE", "UPPERCASE SENTENCE HERE", "CamelCaseWordsTogether",
    "e\u0301", "cafe\u0301", "\u212b", "\u0130stanbul", "\u1e9e", "\u01c5",
    "caf\u00c3\u00a9", "\u00e2\u20ac\u0153mojibake\u00e2\u20ac\u009d", "voil\u00c3\u00a0 le travail",
]

LONG = [
    " ".join(["word"] * 100),
    "a photo of " + ", ".join(f"item number {i}" for i in range(40)),
    "The quick brown fox jumps over the lazy dog. " * 8,
    "1234567890" * 10,
    "\U0001f600" * 40,
    "\u4f60\u597d" * 60,
]


def captions(rng, n):
    subjects = ["a cat", "two dogs", "an astronaut", "a teddy bear", "the eiffel tower", "a bowl of soup",
                "a robot", "an old man", "three red apples", "a bicycle", "a lighthouse", "a corgi"]
    verbs = ["riding", "eating", "sitting next to", "painting", "holding", "looking at", "flying over"]
    objects = ["a horse", "a pizza", "the moon", "a skateboard", "an umbrella", "a stack of books",
               "a neon sign", "the ocean"]
    styles = ["", ", digital art", " in the style of van gogh", ", 4k photo", ", oil on canvas",
              " by Pixar", ", trending on artstation", ". Watercolor!", " (1920s photograph)"]
    out = []
    for _ in range(n):
        s = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}{rng.choice(styles)}"
        if rng.random() < 0.3:
            s = s.capitalize()
        if rng.random() < 0.2:
            s = s.upper()
        out.append(s)
    return out


POOL = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") * 3
        + list(" " * 20) + list("'.,!?;:-_()[]{}\"/\\@#$%^&*+=<>|~`") + ["'s", "'t", "'re", "&amp;", "&#39;", "&lt;"]
        + list("\u00e9\u00e8\u00fc\u00f1\u00e7\u00df\u00f8\u00e5\u00c9\u00d6")
        + list("\u03b1\u03a9\u0436\u0414\u4e2d\u6587\u5b57\u3042\u30a2\ud55c\u0627\u064e\u05d0\u05b8\u0915\u093e\u094d\u0e01\u0e31")
        + ["\U0001f600", "\u2764\ufe0f", "\U0001f44d\U0001f3fd", "\u2167", "\u00b2", "\u00bd", "\u0663", "\uff21", "\ufb01",
           "\u2019", "\u201c", "\u00a0", "\t", "\n", "\u200d", "\u0301", "\u3000", "\u2026", "\u2014"])


def random_strings(rng, n):
    return ["".join(rng.choice(POOL) for _ in range(rng.randint(1, 25))) for _ in range(n)]


def class_ranges(pattern):
    cls = re.compile(pattern)
    out = []
    for cp in range(0x110000):
        if cls.match(chr(cp)):
            if out and out[-1][1] == cp - 1:
                out[-1][1] = cp
            else:
                out.append([cp, cp])
    return out


def main():
    bpe_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "..", "..", "shared", "data", "clip", "bpe_simple_vocab_16e6.txt.gz")
    tok = SimpleTokenizer(bpe_path)
    rng = random.Random(1234)
    strings = HANDWRITTEN + LONG + captions(rng, 40) + random_strings(rng, 60)

    hf = None
    try:
        import tempfile

        from transformers import CLIPTokenizer
        tmp = tempfile.mkdtemp()
        with open(os.path.join(tmp, "vocab.json"), "w") as f:
            json.dump(tok.encoder, f)
        with open(os.path.join(tmp, "merges.txt"), "w") as f:
            f.write(gzip.open(bpe_path).read().decode("utf-8"))
        hf = CLIPTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"))
    except ImportError:
        print("transformers not installed: no cross-check")

    cases, hf_disagree = [], []
    for text in strings:
        ids = tok.encode(text)
        case = {"text": text, "ids": ids, "decoded": tok.decode(ids)}
        if clip_tokenize(tok, text) is None:  # too long for 77: clip.tokenize raises unless truncate
            case["tokenize_77_truncate"] = clip_tokenize(tok, text, truncate=True)
        # The Rust port repairs no mojibake and applies no NFC: say where that changes the ids.
        approx_ids = tok.encode(text, fix_text=fix_text_without_encoding_and_nfc)
        if approx_ids != ids:
            case["ids_without_mojibake_fix_and_nfc"] = approx_ids
        if hf is not None:
            hf_ids = hf.convert_tokens_to_ids(hf.tokenize(text))
            if hf_ids != ids:
                hf_disagree.append({"text": text, "clip": ids, "transformers": hf_ids})
        cases.append(case)

    out = {
        "about": "CLIP simple_tokenizer ids; see tests/golden/clip_tokenizer_fixture.py",
        "versions": {"python": sys.version.split()[0], "ftfy": ftfy.__version__, "regex": re.__version__},
        "vocab_size": len(tok.encoder),
        "sot": tok.encoder["<|startoftext|>"], "eot": tok.encoder["<|endoftext|>"],
        "cases": cases,
        "transformers_disagreements": hf_disagree,
        # The classes of the pre-tokenisation regex, as inclusive code point ranges.
        "letter_ranges": class_ranges(r"\p{L}"),
        "number_ranges": class_ranges(r"\p{N}"),
        "space_ranges": class_ranges(r"\s"),
    }
    path = os.path.join(os.path.dirname(__file__), "clip_tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=True, separators=(",", ":"))
    n_approx = sum("ids_without_mojibake_fix_and_nfc" in c for c in cases)
    print(f"wrote {path}: {len(cases)} strings, {n_approx} where mojibake repair / NFC matter, "
          f"{len(hf_disagree)} where transformers.CLIPTokenizer disagrees")
    for d in hf_disagree:
        print("  transformers differs on", repr(d["text"]))
    for c in cases:
        if "ids_without_mojibake_fix_and_nfc" in c:
            print("  ftfy-only:", repr(c["text"]))


if __name__ == "__main__":
    main()
