"""The UTF-8 constraint: its state machine accepts exactly the valid UTF-8 prefixes (Python's decoder is the judge),
the batch mask is the per-token rule, and a byte-level model sampling through it never writes U+FFFD, while the same
sampling without it does."""

from __future__ import annotations

import codecs
import itertools
import random

import pytest
import torch
from conftest import SAMPLE_TEXT, tiny_config, tiny_model

from minilm import Tokenizer, Transformer, causal_lm_loss, complete, generate
from minilm.model.sampling import sample_next_token
from minilm.model.utf8 import BETWEEN, STATES, Utf8Constraint, is_valid_prefix, step, walk

# The opening of the Analects (論語·學而), the opening poem and first lines of Romance of the Three Kingdoms
# (三國演義, 毛宗崗本), both public domain, plus emoji and a few characters whose UTF-8 starts with E0, ED, F0, F3, F4.
CORPUS = [
    "子曰：學而時習之，不亦說乎？有朋自遠方來，不亦樂乎？人不知而不慍，不亦君子乎？\n",
    "有子曰：其為人也孝弟，而好犯上者，鮮矣；不好犯上，而好作亂者，未之有也。君子務本，本立而道生。孝弟也者，其為仁之本與！\n",
    "子曰：巧言令色，鮮矣仁！\n",
    "曾子曰：吾日三省吾身：為人謀而不忠乎？與朋友交而不信乎？傳不習乎？\n",
    "子曰：道千乘之國，敬事而信，節用而愛人，使民以時。\n",
    "子曰：弟子入則孝，出則弟，謹而信，汎愛眾，而親仁。行有餘力，則以學文。\n",
    "子夏曰：賢賢易色；事父母，能竭其力；事君，能致其身；與朋友交，言而有信。雖曰未學，吾必謂之學矣。\n",
    "子曰：君子不重則不威，學則不固。主忠信，無友不如己者，過則勿憚改。\n",
    "曾子曰：慎終追遠，民德歸厚矣。\n",
    "滾滾長江東逝水，浪花淘盡英雄。是非成敗轉頭空。青山依舊在，幾度夕陽紅。\n",
    "白髮漁樵江渚上，慣看秋月春風。一壺濁酒喜相逢。古今多少事，都付笑談中。\n",
    "話說天下大勢，分久必合，合久必分。周末七國分爭，并入於秦。及秦滅之後，楚、漢分爭，又并入於漢。\n",
    "孔明 🐉🌕🍵🎋🏯📜✨😀🙏🎉 ॐ 한국 𠀀𝄞 \U000e0041 \U0010fffd\n",
]
PROMPTS = ["孔明", "子曰：", "🐉", "滾滾長江"]
SETTINGS = [dict(temperature=1.0), dict(temperature=0.0), dict(temperature=1.0, top_k=20), dict(top_p=0.9)]
SETTING_IDS = ["sampled", "greedy", "top-k", "top-p"]


def decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def completes(data: bytes) -> bool:
    """Python's verdict on `data` being a valid UTF-8 prefix: some continuation bytes make it decode.

    Every range UTF-8 allows for a next continuation byte holds 80 or BF, so trying those two is enough.
    """
    return any(decodes(data + bytes(c)) for n in range(4) for c in itertools.product((0x80, 0xBF), repeat=n))


def random_utf8_ish(rng: random.Random) -> bytes:
    """Bytes near valid UTF-8: whole characters from every range, some cut short, some random bytes."""
    out = b""
    for _ in range(rng.randint(1, 6)):
        kind = rng.random()
        if kind < 0.6:
            hi = rng.choice([0x7F, 0x7FF, 0xFFFF, 0x10FFFF])
            c = rng.randint(0, hi)
            encoded = chr(c).encode("utf-8", "surrogatepass")  # surrogates too, which UTF-8 forbids
            out += encoded if rng.random() < 0.7 else encoded[: rng.randint(1, len(encoded))]
        else:
            out += bytes([rng.randint(0, 255)])
    return out


# ---- the state machine -------------------------------------------------------------------------------------------
def test_the_states_are_closed_under_every_byte_and_all_reachable():
    reached = {BETWEEN}
    for state in STATES:
        for byte in range(256):
            after = step(state, byte)
            assert after is None or after in STATES
            if after is not None:
                reached.add(after)
    assert reached == set(STATES)


def test_the_state_machine_accepts_exactly_the_valid_utf8_prefixes_of_random_byte_strings():
    rng = random.Random(0)
    verdicts = set()
    for _ in range(3000):
        data = random_utf8_ish(rng)
        for end in range(1, len(data) + 1):
            ours = is_valid_prefix(data[:end])
            assert ours == completes(data[:end]), data[:end]
            verdicts.add(ours)
        # Python's incremental decoder rejects a byte as soon as it knows; whatever it rejects, so do we
        decoder = codecs.getincrementaldecoder("utf-8")()
        for end in range(len(data)):
            try:
                decoder.decode(data[end : end + 1], final=False)
            except UnicodeDecodeError:
                assert not is_valid_prefix(data[: end + 1]), data[: end + 1]
                break
        whole = walk(BETWEEN, data) == BETWEEN
        assert whole == decodes(data), data
    assert verdicts == {True, False}


# code points whose UTF-8 starts with C2-DF, E0, E1-EC, ED, EE-EF, F0, F1-F3, F4
RANGES = [(0x80, 0x7FF), (0x800, 0xFFF), (0x1000, 0xCFFF), (0xD000, 0xD7FF), (0xE000, 0xFFFF)]
RANGES += [(0x10000, 0x3FFFF), (0x40000, 0xFFFFF), (0x100000, 0x10FFFF)]
EDGES = (
    0x00,
    0x7F,
    0x80,
    0x8F,
    0x90,
    0x9F,
    0xA0,
    0xBF,
    0xC0,
    0xC1,
    0xC2,
    0xDF,
    0xE0,
    0xED,
    0xEF,
    0xF0,
    0xF4,
    0xF5,
    0xFF,
)


def test_the_state_machine_agrees_with_python_on_every_one_to_four_byte_edge_case():
    two = [bytes([a, b]) for a in range(256) for b in range(256)]
    three = [bytes([a, *rest]) for a in range(0xC0, 0x100) for rest in itertools.product(EDGES, repeat=2)]
    four = [bytes([a, *rest]) for a in range(0xF0, 0xF8) for rest in itertools.product(EDGES, repeat=3)]
    for data in [bytes([a]) for a in range(256)] + two + three + four:
        assert is_valid_prefix(data) == completes(data), data.hex(" ")


@pytest.mark.parametrize(
    "data, valid",
    [
        (b"\x80", False),  # a continuation byte with nothing to continue
        (b"\xc0\x80", False),  # overlong NUL
        (b"\xc1\xbf", False),  # overlong U+007F
        (b"\xc2\x80", True),  # U+0080
        (b"\xe0\x9f\xbf", False),  # overlong U+07FF
        (b"\xe0\xa0\x80", True),  # U+0800
        (b"\xed\x9f\xbf", True),  # U+D7FF
        (b"\xed\xa0", False),  # a surrogate, D800-DFFF, already at its second byte
        (b"\xed\xbf\xbf", False),  # U+DFFF
        (b"\xee\x80\x80", True),  # U+E000
        (b"\xf0\x8f\xbf\xbf", False),  # overlong U+FFFF
        (b"\xf0\x90\x80\x80", True),  # U+10000
        (b"\xf4\x8f\xbf\xbf", True),  # U+10FFFF
        (b"\xf4\x90", False),  # past U+10FFFF
        (b"\xf5\x80\x80\x80", False),
        (b"\xe4\xb8", True),  # a cut-short 中: a valid prefix
        (b"\xe4\xb8\x41", False),  # ... broken by ASCII
    ],
)
def test_overlongs_surrogates_and_code_points_past_10ffff_are_rejected(data, valid):
    assert is_valid_prefix(data) == valid == completes(data)


# ---- the tables over a vocabulary -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chinese_tokenizer() -> Tokenizer:
    """A vocabulary so small that most of these characters are written as 2-4 byte tokens."""
    return Tokenizer.train(texts=CORPUS, vocab_size=300)


@pytest.fixture(scope="module")
def chinese_model(chinese_tokenizer) -> Transformer:
    """Untrained: it samples nearly uniformly over byte tokens, the hardest case for the constraint."""
    return tiny_model(vocab_size=chinese_tokenizer.vocab_size)


def test_token_bytes_are_the_bytes_the_tokenizer_decodes(chinese_tokenizer):
    table = chinese_tokenizer.token_bytes()
    text = "".join(CORPUS)
    assert b"".join(table[i] for i in chinese_tokenizer.encode(text)) == text.encode("utf-8")
    assert table[: chinese_tokenizer.eos_id + 1] == [None] * (chinese_tokenizer.eos_id + 1)
    assert {data for data in table if data is not None and len(data) == 1} == {bytes([b]) for b in range(256)}
    for i, data in enumerate(table[7:], start=7):
        assert chinese_tokenizer.decode([i]) == data.decode("utf-8", errors="replace")


def test_the_batch_mask_equals_the_per_token_check_for_random_states(chinese_tokenizer):
    """Left-padded prompts of stray continuation bytes (a window cut inside a character), whole characters, then the
    first bytes of a random character; each row's mask is checked token by token against Python's decoder."""
    utf8 = Utf8Constraint.from_tokenizer(chinese_tokenizer)
    table = chinese_tokenizer.token_bytes()
    byte_id = {data: i for i, data in enumerate(table) if data is not None and len(data) == 1}
    rng = random.Random(1)
    text = "".join(CORPUS)
    rows, pendings = [], []
    for _ in range(100):
        junk = bytes(rng.randint(0x80, 0xBF) for _ in range(rng.randint(0, 3)))
        start = rng.randrange(len(text))
        whole = text[start : start + rng.randint(0, 6)]
        char = chr(rng.randint(*rng.choice(RANGES))).encode("utf-8")
        pending = char[: rng.randrange(len(char))]  # b"" or the first bytes of a character
        ids = [byte_id[bytes([b])] for b in junk] + chinese_tokenizer.encode(whole)
        rows.append(ids + [byte_id[bytes([b])] for b in pending])
        pendings.append(pending)
    batch = chinese_tokenizer.pad(rows, side="left")
    state = utf8.start(batch["input_ids"], batch["attention_mask"])
    allowed = utf8.mask(state)
    for row, (s, pending) in enumerate(zip(state.tolist(), pendings)):
        assert STATES[s] == walk(BETWEEN, pending)
        expected = [pending == b"" if data is None else completes(pending + data) for data in table]
        assert allowed[row].tolist() == expected, pending.hex(" ")
    assert set(STATES[s] for s in state.tolist()) == set(STATES), "the random prompts missed some of UTF-8's states"


def test_a_vocabulary_that_cannot_finish_a_character_is_a_clear_error():
    """ASCII and the lead byte E4, but no continuation byte: after E4 nothing is allowed, and nothing is drawn."""
    token_bytes = [None] * 7 + [bytes([b]) for b in range(0x20, 0x7F)] + [b"\xe4"]
    utf8 = Utf8Constraint.from_token_bytes(token_bytes)
    model = tiny_model(vocab_size=len(token_bytes))
    assert utf8.mask(utf8.start(torch.tensor([[8, 9]]))).all(dim=-1).tolist() == [True]
    with pytest.raises(ValueError, match=r"no token of this vocabulary continues a character that needs 2 more byte"):
        generate(model, torch.tensor([[8, len(token_bytes) - 1]]), 3, utf8=utf8)


def test_a_constraint_for_another_vocabulary_size_is_a_clear_error(chinese_tokenizer):
    utf8 = Utf8Constraint.from_tokenizer(chinese_tokenizer)
    model = tiny_model(vocab_size=chinese_tokenizer.vocab_size + 4)
    with pytest.raises(
        ValueError, match=r"covers 300 tokens but the model has 304: .*from_tokenizer\(tokenizer, model"
    ):
        generate(model, torch.tensor([[10]]), 2, utf8=utf8)


# ---- sampling under the constraint -------------------------------------------------------------------------------
def row_bytes(utf8: Utf8Constraint, row: list[int]) -> bytes:
    return b"".join(utf8.token_bytes[i] or b"" for i in row)


@pytest.mark.parametrize("setting", SETTINGS, ids=SETTING_IDS)
def test_sampled_chinese_and_emoji_continuations_are_valid_utf8_and_without_the_constraint_are_not(
    setting, chinese_tokenizer, chinese_model
):
    utf8 = Utf8Constraint.from_tokenizer(chinese_tokenizer, chinese_model.config.vocab_size)
    batch = chinese_tokenizer.encode_batch(PROMPTS * 2, side="left")
    ids, kwargs = batch["input_ids"], dict(attention_mask=batch["attention_mask"], **setting)
    free_rows, kept_rows = [], []
    for seed in range(2):
        free_rows += generate(chinese_model, ids, 32, seed=seed, **kwargs).tolist()
        kept_rows += generate(chinese_model, ids, 32, seed=seed, utf8=utf8, **kwargs).tolist()
    for row in kept_rows:
        assert is_valid_prefix(row_bytes(utf8, row)), chinese_tokenizer.decode(row)
        assert "\ufffd" not in utf8.text(row)
        if chinese_tokenizer.eos_id in row:  # [EOS] only between characters
            assert walk(BETWEEN, row_bytes(utf8, row[: row.index(chinese_tokenizer.eos_id)])) == BETWEEN
    assert any("\ufffd" in chinese_tokenizer.decode(row) for row in free_rows)
    assert not all(is_valid_prefix(row_bytes(utf8, row)) for row in free_rows)


def test_complete_never_returns_a_broken_last_character(chinese_tokenizer, chinese_model):
    """Where max_new_tokens runs out inside a character, complete ends on the last whole one (which drops at most
    the 3 bytes of the unfinished character)."""
    utf8 = Utf8Constraint.from_tokenizer(chinese_tokenizer, chinese_model.config.vocab_size)
    ids = chinese_tokenizer.encode("孔明")
    trimmed = 0
    for n, seed in itertools.product(range(1, 7), range(2)):
        text = complete(chinese_model, chinese_tokenizer, "孔明", n, seed=seed)
        out = generate(chinese_model, torch.tensor([ids]), n, temperature=0.8, seed=seed + len(ids), utf8=utf8)
        raw = row_bytes(utf8, out[0].tolist())  # what complete drew (one round, the same seed)
        assert is_valid_prefix(raw)
        whole = max(k for k in range(len(raw) + 1) if decodes(raw[:k]))
        assert text == raw[:whole].decode("utf-8") and len(raw) - whole <= 3
        assert text.startswith("孔明") and "\ufffd" not in text
        trimmed += whole < len(raw)
    assert trimmed > 0, "no continuation stopped inside a character, so nothing was trimmed"


@pytest.mark.parametrize("setting", SETTINGS, ids=SETTING_IDS)
def test_complete_past_the_context_writes_only_valid_utf8(setting, chinese_tokenizer):
    """A 16-token context: each round restarts from a window that may begin inside a character."""
    model = tiny_model(vocab_size=chinese_tokenizer.vocab_size, max_len=16)
    for seed in range(2):
        text = complete(model, chinese_tokenizer, "滾滾長江", 40, seed=seed, **setting)
        assert text.startswith("滾滾長江") and "\ufffd" not in text


# ---- ASCII is unchanged ------------------------------------------------------------------------------------------
SAMPLED = [dict(temperature=1.0), dict(temperature=0.0), dict(temperature=0.9, top_k=20, top_p=0.9)]


def test_a_mask_that_allows_every_token_leaves_the_draws_bitwise_unchanged():
    logits = torch.randn(6, 300, generator=torch.Generator().manual_seed(0))
    every = torch.ones_like(logits, dtype=torch.bool)
    for setting in [(1.0, None, None), (0.7, 20, 0.9), (0.0, None, None)]:
        free = sample_next_token(logits, *setting, torch.Generator().manual_seed(1))
        masked = sample_next_token(logits, *setting, torch.Generator().manual_seed(1), every)
        assert torch.equal(free, masked)
    ascii_only = [None] * 7 + [bytes([0x20 + i % 95]) for i in range(293)]  # every token is allowed everywhere
    model = tiny_model()
    ids = torch.randint(7, 300, (3, 4), generator=torch.Generator().manual_seed(2))
    for setting in SAMPLED:
        constrained = generate(model, ids, 20, seed=3, utf8=Utf8Constraint.from_token_bytes(ascii_only), **setting)
        assert torch.equal(constrained, generate(model, ids, 20, seed=3, **setting))


@pytest.mark.parametrize("setting", [dict(temperature=1.0), dict(temperature=0.0)], ids=["sampled", "greedy"])
def test_the_constraint_changes_a_draw_only_where_the_free_draw_breaks_utf8(setting, chinese_tokenizer, chinese_model):
    """Greedy: the argmax over the allowed tokens is the argmax unless that is forbidden. Sampled: the sampler races
    p_w / q_w with q_w ~ Exp(1) drawn for every token, and the mask only rescales the p_w it keeps."""
    utf8 = Utf8Constraint.from_tokenizer(chinese_tokenizer, chinese_model.config.vocab_size)
    batch = chinese_tokenizer.encode_batch(PROMPTS * 2, side="left")
    mask = torch.cat([batch["attention_mask"], torch.ones(len(PROMPTS) * 2, 24, dtype=torch.long)], dim=1)
    changed = 0
    for seed in range(2):
        kwargs = dict(attention_mask=batch["attention_mask"], seed=seed, eos_id=None, **setting)
        free = generate(chinese_model, batch["input_ids"], 24, **kwargs)
        kept = generate(chinese_model, batch["input_ids"], 24, utf8=utf8, **kwargs)
        for row in range(free.size(0)):
            differ = (free[row] != kept[row]).nonzero()
            if len(differ):
                c = int(differ[0])
                state = utf8.start(free[row : row + 1, :c], mask[row : row + 1, :c])  # before the first change
                assert not utf8.allowed[state, free[row, c]].item(), f"row {row} changed at a valid draw"
                changed += 1
    assert changed > 0, "the free draws never broke UTF-8, so the constraint was never tested"


@pytest.mark.slow  # it trains the model for 60 steps
def test_an_ascii_model_writes_bitwise_the_same_text_with_the_constraint(tokenizer):
    """Trained a little on English, the model keeps the byte tokens UTF-8 forbids after ASCII out of its top k, so
    greedy and top-k draws, and complete's text, are exactly what they are without the constraint."""
    ids = tokenizer.encode("".join(SAMPLE_TEXT[:3])) * 2
    lines = torch.tensor([ids[i : i + 32] for i in range(0, 36, 6)])
    model = Transformer(tiny_config(), seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = causal_lm_loss(model(lines), lines)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    utf8 = Utf8Constraint.from_tokenizer(tokenizer, model.config.vocab_size)
    batch = tokenizer.encode_batch(["To be, or", "The quick brown", "Whether 'tis"], side="left")
    assert not utf8.mask(utf8.start(batch["input_ids"], batch["attention_mask"])).all(), "nothing is masked"
    for setting, seed in itertools.product([dict(temperature=0.0), dict(temperature=0.9, top_k=20, top_p=0.9)], (0, 1)):
        kwargs = dict(attention_mask=batch["attention_mask"], seed=seed, **setting)
        free = generate(model, batch["input_ids"], 30, **kwargs)
        assert torch.equal(generate(model, batch["input_ids"], 30, utf8=utf8, **kwargs), free)
    prompt = tokenizer.encode("To be, or")
    free = generate(model, torch.tensor([prompt]), 30, temperature=0.8, top_k=20, seed=len(prompt))
    assert complete(model, tokenizer, "To be, or", 30, top_k=20) == tokenizer.decode(free[0])
