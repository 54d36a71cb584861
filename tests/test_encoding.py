"""Prompt formatting, token labels and masks with the real SmolLM2 tokenizer (pad == eos == <|im_end|>)."""

from __future__ import annotations

import pytest
import torch

from ragforget.data.encoding import (
    IGNORE_INDEX,
    Encoded,
    collate_for_training,
    collate_prompts,
    encode_example,
    encode_prompt,
)
from ragforget.data.prompt import RagPrompt
from ragforget.data.rag_examples import as_training_example, build_examples, encode_for_generation, encode_for_training
from ragforget.models.loading import load_tokenizer

IM_END = 2


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path: str):
    return load_tokenizer(tiny_model_path)


@pytest.fixture()
def prompt() -> RagPrompt:
    return RagPrompt()


def _closed_book(tokenizer, prompt: RagPrompt, question: str = "Who sang Help?"):
    return prompt.messages(question, [], tokenizer)


def test_pad_equals_eos_equals_im_end(tokenizer) -> None:
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == IM_END


def test_chat_encoding_answer_is_answer_plus_im_end(tokenizer, prompt: RagPrompt) -> None:
    messages = _closed_book(tokenizer, prompt)
    enc = encode_example(tokenizer, messages, "The Beatles", chat_template=True, plain_text="unused")
    assert tokenizer.decode(enc.answer_ids) == "The Beatles<|im_end|>"
    assert enc.answer_ids[-1] == IM_END
    assert enc.answer_ids.count(IM_END) == 1            # the template's trailing newline is dropped
    decoded_prompt = tokenizer.decode(enc.prompt_ids)
    assert decoded_prompt.endswith("<|im_start|>assistant\n")
    assert "Question: Who sang Help?" in decoded_prompt
    assert "Beatles" not in decoded_prompt
    assert enc.prompt_ids == encode_prompt(tokenizer, messages, True, "unused")


def test_plain_encoding_appends_eos(tokenizer, prompt: RagPrompt) -> None:
    messages = _closed_book(tokenizer, prompt)
    plain = prompt.plain_text(messages)
    assert plain.endswith("Question: Who sang Help?\nAnswer:")
    enc = encode_example(tokenizer, messages, "The Beatles", chat_template=False, plain_text=plain)
    expected = tokenizer(" The Beatles", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert enc.answer_ids == expected
    assert tokenizer.decode(enc.answer_ids) == " The Beatles<|im_end|>"
    assert enc.prompt_ids == tokenizer(plain)["input_ids"]
    assert "<|im_start|>" not in tokenizer.decode(enc.prompt_ids)


def test_collate_labels_only_on_answer_and_mask_from_lengths(tokenizer, prompt: RagPrompt) -> None:
    short = encode_example(tokenizer, _closed_book(tokenizer, prompt, "Who?"), "Yes", True, "")
    long = encode_example(tokenizer, _closed_book(tokenizer, prompt, "Which band sang the song Help in 1965?"),
                          "The Beatles", True, "")
    batch = collate_for_training([short, long], pad_id=tokenizer.pad_token_id)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    n_short = len(short.prompt_ids) + len(short.answer_ids)
    n_long = len(long.prompt_ids) + len(long.answer_ids)
    assert n_short < n_long
    assert ids.shape == mask.shape == labels.shape == (2, n_long)
    assert ids.dtype == mask.dtype == labels.dtype == torch.long

    for row, ex, n in ((0, short, n_short), (1, long, n_long)):
        n_p = len(ex.prompt_ids)
        assert ids[row, :n].tolist() == ex.prompt_ids + ex.answer_ids
        # no label on the prompt, exactly the answer (with its <|im_end|>) after it
        assert (labels[row, :n_p] == IGNORE_INDEX).all()
        assert labels[row, n_p:n].tolist() == ex.answer_ids
        assert mask[row, :n].tolist() == [1] * n
        # the answer's trailing <|im_end|> is the pad id but is a real, attended, labelled token
        assert ids[row, n - 1].item() == IM_END
        assert mask[row, n - 1].item() == 1
        assert labels[row, n - 1].item() == IM_END
    answer_labels = labels[1][labels[1] != IGNORE_INDEX].tolist()
    assert tokenizer.decode(answer_labels) == "The Beatles<|im_end|>"

    # padding: same id as eos, but no attention and no label
    pad = slice(n_short, n_long)
    assert (ids[0, pad] == IM_END).all()
    assert (mask[0, pad] == 0).all()
    assert (labels[0, pad] == IGNORE_INDEX).all()
    # a mask derived from the pad id would be wrong here: it would drop the answer's <|im_end|>
    assert not torch.equal((ids != tokenizer.pad_token_id).long(), mask)
    assert mask.sum(dim=1).tolist() == [n_short, n_long]


def test_collate_max_length_cuts_prompt_from_left() -> None:
    ex = Encoded(prompt_ids=[10, 11, 12, 13, 14, 15], answer_ids=[20, 21, IM_END])
    batch = collate_for_training([ex], pad_id=IM_END, max_length=5)
    assert batch["input_ids"].tolist() == [[14, 15, 20, 21, IM_END]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 20, 21, IM_END]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1]]


def test_collate_max_length_cuts_a_long_target_from_the_right() -> None:
    # window 6: the prompt keeps min(4, 6 // 2) = 3 tokens from the left cut, the target the first 3.
    ex = Encoded(prompt_ids=[10, 11, 12, 13], answer_ids=[20, 21, 22, 23, 24, IM_END])
    batch = collate_for_training([ex], pad_id=IM_END, max_length=6)
    assert batch["input_ids"].tolist() == [[11, 12, 13, 20, 21, 22]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX] * 3 + [20, 21, 22]]


def test_collate_max_length_leaves_short_examples_alone() -> None:
    short = Encoded(prompt_ids=[10, 11], answer_ids=[20, IM_END])
    long = Encoded(prompt_ids=[30, 31, 32, 33, 34], answer_ids=[40, IM_END])
    batch = collate_for_training([short, long], pad_id=IM_END, max_length=5)
    assert batch["input_ids"].tolist() == [[10, 11, 20, IM_END, IM_END], [32, 33, 34, 40, IM_END]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [
        [IGNORE_INDEX, IGNORE_INDEX, 20, IM_END, IGNORE_INDEX],
        [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 40, IM_END],
    ]


def test_collate_max_length_on_real_example_keeps_whole_answer(tokenizer, prompt: RagPrompt) -> None:
    ex = encode_example(tokenizer, _closed_book(tokenizer, prompt), "The Beatles", True, "")
    max_length = len(ex.answer_ids) + 4
    batch = collate_for_training([ex], pad_id=tokenizer.pad_token_id, max_length=max_length)
    assert batch["input_ids"].shape == (1, max_length)
    assert batch["input_ids"][0].tolist() == ex.prompt_ids[-4:] + ex.answer_ids
    assert tokenizer.decode(batch["labels"][0][4:].tolist()) == "The Beatles<|im_end|>"
    assert (batch["labels"][0][:4] == IGNORE_INDEX).all()


def test_collate_prompts_left_pads() -> None:
    batch = collate_prompts([[5, 6, 7], [8]], pad_id=IM_END)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [IM_END, IM_END, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_collate_prompts_keeps_a_real_trailing_pad_id() -> None:
    # a prompt ending in <|im_end|> is still attended there; only the left padding is masked
    batch = collate_prompts([[5, IM_END], [IM_END]], pad_id=IM_END)
    assert batch["attention_mask"].tolist() == [[1, 1], [0, 1]]


def test_rag_prompt_numbers_documents_and_truncates_passages(tokenizer) -> None:
    prompt = RagPrompt(max_passage_tokens=5)
    long_body = "one two three four five six seven eight nine ten eleven twelve"
    passages = [
        {"id": "p1", "title": "Numbers", "contents": "Numbers\n" + long_body},
        {"id": "p2", "title": "Short", "contents": "Short\nTiny text."},
    ]
    text = prompt.user_message("What comes after five?", passages, tokenizer)
    body_ids = tokenizer(long_body, add_special_tokens=False)["input_ids"]
    assert len(body_ids) > 5
    cut = tokenizer.decode(body_ids[:5])
    assert cut == "one two three four five"
    assert text == (
        "The following are given documents.\n\n"
        "Doc 1 (Title: Numbers) one two three four five\n"
        "Doc 2 (Title: Short) Tiny text.\n\n"
        "Question: What comes after five?"
    )
    assert "six" not in text


def test_rag_prompt_truncate_is_a_token_budget(tokenizer) -> None:
    prompt = RagPrompt(max_passage_tokens=7)
    text = " ".join(f"word{i}" for i in range(50))
    cut = prompt.truncate(text, tokenizer)
    assert len(tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 7
    assert text.startswith(cut)
    assert prompt.truncate("short text", tokenizer) == "short text"


def test_rag_prompt_title_falls_back_to_first_line(tokenizer) -> None:
    prompt = RagPrompt()
    # no 'title' key: taken from the first line; no body: the title line is the text
    text = prompt.user_message("Q?", [{"id": "x", "contents": "Only A Title"}], tokenizer)
    assert "Doc 1 (Title: Only A Title) Only A Title" in text


def test_closed_book_prompt_has_only_the_question(tokenizer, prompt: RagPrompt) -> None:
    messages = prompt.messages("Who sang Help?", [], tokenizer)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == prompt.system
    assert messages[1]["content"] == "Question: Who sang Help?"
    assert prompt.plain_text(messages) == prompt.system + "\n\nQuestion: Who sang Help?\nAnswer:"


def test_build_examples_joins_retrieved_passages(tokenizer, prompt: RagPrompt) -> None:
    corpus = {
        "d1": {"id": "d1", "title": "Help!", "contents": "Help!\nA song by the Beatles."},
        "d2": {"id": "d2", "title": "Abbey Road", "contents": "Abbey Road\nAn album."},
    }
    records = [
        {"id": "q1", "question": "Who sang Help?", "golden_answers": ["The Beatles", "Beatles"]},
        {"id": "q2", "question": "Closed?", "golden_answers": ["yes"]},
    ]
    examples = build_examples(records, {"q1": ["d2", "d1"]}, corpus, prompt, tokenizer)
    assert [e.id for e in examples] == ["q1", "q2"]
    first, second = examples
    assert first.doc_ids == ["d2", "d1"]
    user = first.messages[1]["content"]
    assert user.index("Doc 1 (Title: Abbey Road) An album.") < user.index("Doc 2 (Title: Help!) A song by")
    assert first.golden_answers == ["The Beatles", "Beatles"]
    assert first.plain_text == prompt.plain_text(first.messages)
    # a question with no retrieved entry is closed book
    assert second.doc_ids == []
    assert second.messages[1]["content"] == "Question: Closed?"

    enc = encode_for_training(as_training_example(first), tokenizer, chat_template=True)
    assert tokenizer.decode(enc.answer_ids) == "The Beatles<|im_end|>"   # the first gold answer
    assert encode_for_generation(first, tokenizer, chat_template=True) == enc.prompt_ids
    plain = encode_for_generation(first, tokenizer, chat_template=False)
    assert plain == tokenizer(first.plain_text)["input_ids"]
