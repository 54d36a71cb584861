"""The RAG prompt: top-k passages and the question, in the model's chat template (FlashRAG style)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

Message = dict[str, str]


@dataclass
class RagPrompt:
    """Formats one question with its retrieved passages into chat messages or plain text.

    Each passage is cut to ``max_passage_tokens`` so the prompt length is bounded by
    k * max_passage_tokens plus the template, whatever the corpus.
    """

    system: str = (
        "Answer the question based on the given documents. "
        "Only give me the answer and do not output any other words."
    )
    documents_header: str = "The following are given documents.\n\n"
    document: str = "Doc {index} (Title: {title}) {text}"
    question: str = "Question: {question}"
    plain_answer_cue: str = "\nAnswer:"
    max_passage_tokens: int = 128

    def truncate(self, text: str, tokenizer: PreTrainedTokenizerBase) -> str:
        """Cut ``text`` to the passage token budget (decoding back keeps the prompt readable)."""
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_passage_tokens:
            return text
        return str(tokenizer.decode(ids[: self.max_passage_tokens]))

    def user_message(self, question: str, passages: Sequence[Mapping[str, Any]],
                     tokenizer: PreTrainedTokenizerBase) -> str:
        """The user turn: numbered documents (if any), then the question."""
        if not passages:
            return self.question.format(question=question)
        docs = []
        for index, passage in enumerate(passages, start=1):
            title, _, body = passage["contents"].partition("\n")
            text = self.truncate(body or title, tokenizer)
            docs.append(self.document.format(index=index, title=passage.get("title", title), text=text))
        return self.documents_header + "\n".join(docs) + "\n\n" + self.question.format(question=question)

    def messages(self, question: str, passages: Sequence[Mapping[str, Any]],
                 tokenizer: PreTrainedTokenizerBase) -> list[Message]:
        """System instruction and user turn, ready for ``apply_chat_template``."""
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user_message(question, passages, tokenizer)},
        ]

    def plain_text(self, messages: Sequence[Message]) -> str:
        """The same prompt for base models without a chat template."""
        return "\n\n".join(m["content"] for m in messages) + self.plain_answer_cue
