"""The ranker with the real embedding model and the packaged roadmap, on a handful of texts
written for these tests: a CNN paper belongs to `cnn`, an NLP paper to `nlp`, and an NLP paper
that uses convolutions still to `nlp`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from feedbot.config import Ranking
from feedbot.digest import stage_vectors
from feedbot.embed import embed_cached
from feedbot.rank import Candidate, StageVectors, rank, stage_fit
from feedbot.roadmap import load_roadmap
from feedbot.store import Store

pytestmark = pytest.mark.model

CNN_PAPER = (
    "Deeper residual convolutional networks for fine-grained bird recognition. We train a "
    "convolutional neural network with residual blocks, small 3x3 filters and global average "
    "pooling to tell apart two hundred bird species from photographs, and show that heavier "
    "data augmentation with random crops and colour jitter improves top-1 accuracy.")
NLP_PAPER = (
    "Instruction tuning a multilingual language model for low-resource translation. We "
    "fine-tune a pretrained transformer language model on instructions written in twelve "
    "languages and evaluate machine translation and question answering, finding that a small "
    "amount of parallel text improves translation quality for languages with little data.")
NLP_WITH_CONVOLUTIONS = (
    "Character-level convolutions for classifying short social media posts by sentiment. We "
    "apply one-dimensional convolution filters over character embeddings to tweets and "
    "compare with word-level recurrent models for sentiment analysis and topic labelling of "
    "text in three languages.")
TEXTS = [CNN_PAPER, NLP_PAPER, NLP_WITH_CONVOLUTIONS]


@pytest.fixture(scope="module")
def vectors(real_embedder: Any, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[np.ndarray, StageVectors]:
    store = Store(tmp_path_factory.mktemp("model") / "t.db")
    sv = stage_vectors(store, real_embedder, load_roadmap())
    return embed_cached(store, real_embedder, TEXTS), sv


def order_for(stage: str, X: np.ndarray, sv: StageVectors) -> list[int]:
    cands = [Candidate(source=f"s{i}", age_days=0.0) for i in range(len(X))]
    w = Ranking().model_copy(update={"mmr": 1.0})
    return [s.index for s in rank(X, cands, sv, stage, w, limit=len(X))]


def test_a_cnn_paper_ranks_first_for_cnn_and_an_nlp_paper_for_nlp(vectors: Any) -> None:
    X, sv = vectors
    cnn, nlp = order_for("cnn", X[:2], sv), order_for("nlp", X[:2], sv)
    assert cnn == [0, 1]
    assert nlp == [1, 0]


def test_an_nlp_paper_using_convolutions_belongs_to_nlp(vectors: Any) -> None:
    X, sv = vectors
    fit = stage_fit(X, sv)
    assert sv.ids[int(fit[0].argmax())] == "cnn"
    assert sv.ids[int(fit[1].argmax())] == "nlp"
    assert sv.ids[int(fit[2].argmax())] == "nlp"
    assert order_for("cnn", X[[0, 2]], sv) == [0, 1]


def test_why_names_a_topic_of_the_stage(vectors: Any) -> None:
    X, sv = vectors
    [top] = rank(X[:1], [Candidate("s", 0.0)], sv, "cnn", Ranking(), limit=1)
    assert "“" in top.why or "stage" in top.why
