"""Test-time scaling strategies: each spends a compute budget on one question and returns the
chosen answer plus what it spent.

A strategy is a frozen dataclass called as `strategy(question, generator, rng) -> Result`, or as
`strategy.run(questions, generator, rngs) -> [Result]` on several questions at once: their
generation calls are then batched (one `Sampler` call for all the questions' samples, a round or
frame level at a time), and each question gets what it would alone with its key:

  SelfConsistency(n)              sample n chain-of-thought completions, vote on their answers
                                  (intervals/boxes: the medoid by IoU; see `voting`).
  BestOfN(n, scorer)              sample n, keep the best by a scorer: `MeanLogProb()`,
                                  `RewardScorer(name)` from `vlmm_jax.rewards.REGISTRY`, or
                                  `VerifierScorer(prompt, yes_id)`: the same model's log p("Yes")
                                  after a verification prompt.
  BeamSearchStrategy(width)       jitted beam search; the best beam's answer.
  AdaptiveConsistency(...)        sample in rounds; stop once the vote is decisive (the Beta
                                  rule of Aggarwal et al. 2023, or a margin rule).
  SparseToDense(frames, n)        Video-RTS: answer from few frames; only where the n samples
                                  disagree, re-encode with more frames and sample again.

Sampling strategies also say what they would have answered with a smaller budget: for each
power of two below theirs, `Result.at_budget[k]` is the same rule applied to the first k of the
same samples. The first k of n i.i.d. samples are a draw of k samples, so this estimates the
strategy's accuracy at budget k without bias (the points of one curve share their samples), and
one run of budget 16 draws the accuracy-against-samples curve 1, 2, 4, 8, 16.

Answers come from `voting.extract_answer`, strict or `Question.lenient`; `Result.completion` is a
completion that gave the chosen answer, which is what `report.evaluate` scores with a reward:
strict keys are what `rewards.accuracy` reads, lenient ones what `accuracy_lenient` reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import jax
import numpy as np

from vlmm_jax import rewards
from vlmm_jax.inference.beam_search import LengthPenalty
from vlmm_jax.inference.tts.generator import (
    Completion,
    Generator,
    Inputs,
    Spent,
    yes_logprob,
)
from vlmm_jax.inference.tts.voting import (
    answer_kind,
    beta_confidence,
    extract_answer,
    vote,
    vote_counts,
)


@dataclasses.dataclass(frozen=True)
class Question:
    """One question: its example record and a prompt builder.

    example: the dataset fields (Video-R1 / Time-R1 names: `problem_type`, `options`, `solution`,
      ...); they choose how answers are extracted and voted, and what `evaluate` scores against.
    prompt: `num_frames -> inputs` of ONE prompt (`input_ids [1, T]`, pixels, grids), so that
      strategies can re-encode the video with more frames.
    num_frames: the frame count of every strategy but `SparseToDense`.
    lenient: vote on the answers `rewards.accuracy_lenient` reads (option letters, numbers in
      text) instead of those `rewards.accuracy` reads; `report.evaluate` then scores with
      `accuracy_lenient`, so the vote and the score agree.
    """

    example: Mapping[str, Any]
    prompt: Callable[[int], Inputs]
    num_frames: int = 16
    lenient: bool = False


@dataclasses.dataclass(frozen=True)
class Result:
    """answer: the chosen (extracted) answer or None; completion: a completion that gave it;
    spent: the compute used; info: strategy-specific details; score: set by `evaluate`;
    at_budget: budget k -> the Result of the same rule on the first k samples (see above)."""

    answer: Any
    completion: str
    spent: Spent
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    score: float | None = None
    at_budget: Mapping[int, Result] = dataclasses.field(default_factory=dict)


def smaller_budgets(n: int, multiple: int = 1) -> list[int]:
    """The powers of two below `n` that are multiples of `multiple`: 1, 2, 4, ... < n."""
    return [1 << i for i in range(max(0, n - 1).bit_length()) if (1 << i) % multiple == 0]


def _share(spent: Spent, k: int, n: int) -> Spent:
    """`k / n` of `spent` (rounded down): the part of a per-sample cost that k samples take."""
    return Spent(*(v * k // max(1, n) for v in spent.as_dict().values()))


def _prefix_spent(
    spent: Spent, completions: Sequence[Completion], k: int, calls: int = 1, of_calls: int = 1
) -> Spent:
    """What the first `k` of `completions` cost: their decoded tokens (`Completion.tokens`
    keep the stop token, as `Spent.tokens` counts it), and the frames and prefills of the first
    `calls` of the `of_calls` generation calls."""
    return Spent(
        samples=k,
        tokens=sum(c.num_tokens for c in completions[:k]),
        frames=spent.frames * calls // of_calls,
        prefills=spent.prefills * calls // of_calls,
    )


class Strategy(Protocol):
    name: str

    def run(
        self, questions: Sequence[Question], generator: Generator, rngs: Sequence[jax.Array]
    ) -> list[Result]:
        """The results of several questions, question i with key `rngs[i]`: each what it would
        get alone (`strategy(question, generator, rng)`), with its generation batched."""
        ...

    def __call__(self, question: Question, generator: Generator, rng: jax.Array) -> Result: ...


class _OneQuestion:
    """`strategy(question, generator, rng)`: `run` on that one question."""

    def __call__(self, question: Question, generator: Generator, rng: jax.Array) -> Result:
        return self.run([question], generator, [rng])[0]


def _sample(questions, generator, n: int, rngs) -> list[tuple[list[Completion], Spent]]:
    """n completions of every question at its own frame count, in one generation call."""
    return generator.sample_many([q.prompt(q.num_frames) for q in questions], n, rngs)


def _answers(question: Question, completions: Sequence[Completion]) -> list[Any]:
    return [extract_answer(c.text, question.example, lenient=question.lenient) for c in completions]


def _voted(question: Question, completions: Sequence[Completion], spent: Spent, **info) -> Result:
    answers = _answers(question, completions)
    winner, index = vote(answers, answer_kind(question.example))
    text = completions[0].text if index is None else completions[index].text
    return Result(winner, text, spent, {"answers": answers, **info})


# ----------------------------------------------------------------------------- self-consistency
@dataclasses.dataclass(frozen=True, kw_only=True)
class SelfConsistency(_OneQuestion):
    """Sample `n` completions and vote (Wang et al. 2023); n=1 is plain sampling."""

    n: int = 8

    @property
    def name(self) -> str:
        return f"self_consistency@{self.n}"

    def run(
        self, questions: Sequence[Question], generator: Generator, rngs: Sequence[jax.Array]
    ) -> list[Result]:
        return [
            self._decide(q, completions, spent)
            for q, (completions, spent) in zip(
                questions, _sample(questions, generator, self.n, rngs), strict=True
            )
        ]

    def _decide(self, question: Question, completions, spent: Spent) -> Result:
        smaller = {
            k: _voted(question, completions[:k], _prefix_spent(spent, completions, k))
            for k in smaller_budgets(self.n)
        }
        return dataclasses.replace(_voted(question, completions, spent), at_budget=smaller)


# ----------------------------------------------------------------------------- best-of-N
class Scorer(Protocol):
    name: str

    def __call__(
        self, question: Question, completions: Sequence[Completion], generator: Generator
    ) -> tuple[list[float], Spent]: ...


@dataclasses.dataclass(frozen=True)
class MeanLogProb:
    """The completion's mean token log-prob under the model (temperature 1)."""

    name: str = "mean_logprob"

    def __call__(self, question, completions, generator):
        return [c.mean_logprob for c in completions], Spent()


@dataclasses.dataclass(frozen=True)
class RewardScorer:
    """A reward `fn(completion, example)`, by `vlmm_jax.rewards.REGISTRY` name or as a callable.

    A name is scored with `rewards.batch_scores` (one call for a batched reward such as a judge;
    a failing sample scores 0 with a logged warning); a callable is called per completion.
    Rewards that read the reference answer (`accuracy`, `tiou`, `bbox_iou`) make best-of-N an
    oracle (pass@N-style upper bound), not a deployable strategy; `format` does not.
    """

    reward: str | Callable[[str, Mapping[str, Any]], float] = "format"

    @property
    def name(self) -> str:
        return self.reward if isinstance(self.reward, str) else self.reward.__name__

    def __call__(self, question, completions, generator):
        texts = [c.text for c in completions]
        if isinstance(self.reward, str):
            examples = [question.example] * len(texts)
            return rewards.batch_scores(self.reward, texts, examples)[0].tolist(), Spent()
        return [float(self.reward(t, question.example)) for t in texts], Spent()


@dataclasses.dataclass(frozen=True)
class VerifierScorer:
    """The same model as a verifier: log p(`yes_id`) after `prompt(question, completion_text)`
    (a prompt such as "...<completion> Is this answer correct? Answer Yes or No."), renormalised
    over {Yes, No} when `no_id` is given. One batched forward over the n verifier prompts."""

    prompt: Callable[[Question, str], Inputs]
    yes_id: int
    no_id: int | None = None
    name: str = "verifier"

    def __call__(self, question, completions, generator):
        prompts = [self.prompt(question, c.text) for c in completions]
        logp, spent = generator.next_token_logprobs(prompts)
        return yes_logprob(np.asarray(logp), self.yes_id, self.no_id).tolist(), spent


@dataclasses.dataclass(frozen=True, kw_only=True)
class BestOfN(_OneQuestion):
    """Sample `n`, return the completion the scorer rates highest (ties: the first)."""

    n: int = 8
    scorer: Scorer = MeanLogProb()

    @property
    def name(self) -> str:
        return f"best_of_n[{self.scorer.name}]@{self.n}"

    def run(
        self, questions: Sequence[Question], generator: Generator, rngs: Sequence[jax.Array]
    ) -> list[Result]:
        sampled = _sample(questions, generator, self.n, rngs)
        return [
            self._best(q, completions, spent, generator)
            for q, (completions, spent) in zip(questions, sampled, strict=True)
        ]

    def _best(self, question: Question, completions, spent: Spent, generator) -> Result:
        scores, extra = self.scorer(question, completions, generator)

        def best_of(k: int, cost: Spent) -> Result:
            text = completions[int(np.argmax(np.asarray(scores[:k], np.float64)))].text
            answer = extract_answer(text, question.example, lenient=question.lenient)
            return Result(answer, text, cost, {"scores": list(scores[:k])})

        smaller = {
            k: best_of(k, _prefix_spent(spent, completions, k) + _share(extra, k, self.n))
            for k in smaller_budgets(self.n)
        }
        return dataclasses.replace(best_of(self.n, spent + extra), at_budget=smaller)


# ----------------------------------------------------------------------------- beam search
@dataclasses.dataclass(frozen=True, kw_only=True)
class BeamSearchStrategy(_OneQuestion):
    """Beam search of `width` beams (see `beam_search`); the best beam's answer."""

    width: int = 4
    alpha: float = 1.0
    penalty: LengthPenalty = "simple"

    @property
    def name(self) -> str:
        return f"beam_search@{self.width}"

    def run(
        self, questions: Sequence[Question], generator: Generator, rngs: Sequence[jax.Array]
    ) -> list[Result]:
        del rngs
        prompts = [q.prompt(q.num_frames) for q in questions]
        out = generator.beam_many(prompts, self.width, alpha=self.alpha, penalty=self.penalty)
        results = []
        for question, (beams, spent) in zip(questions, out, strict=True):
            text = beams[0].text if beams else ""
            answer = extract_answer(text, question.example, lenient=question.lenient)
            results.append(Result(answer, text, spent, {"beams": len(beams)}))
        return results


# ----------------------------------------------------------------------------- adaptive
@dataclasses.dataclass(frozen=True, kw_only=True)
class AdaptiveConsistency(_OneQuestion):
    """Self-consistency in rounds of `round_size` samples, up to `max_samples`, stopping as soon
    as the vote is decisive.

    With v1, v2 the leader's and the runner-up's votes (`voting.vote_counts`):
      * `stopping="beta"` (Aggarwal et al. 2023, Adaptive-Consistency): stop when
        `beta_confidence(v1, v2) = P(p1 > p2 | votes) >= threshold` (0.95 in the paper); e.g.
        4 unanimous votes give 0.969 (stop), 3 give 0.9375 (go on), 5-1 gives 0.9375.
      * `stopping="margin"`: stop when `v1 - v2 >= margin`.
    The check runs after every round, so `round_size` trades latency for granularity. Keep
    `max_samples` a multiple of `round_size` (a shorter last round is a new compiled shape).
    """

    round_size: int = 4
    max_samples: int = 16
    stopping: Literal["beta", "margin"] = "beta"
    threshold: float = 0.95
    margin: int = 3

    def __post_init__(self):
        if self.stopping not in ("beta", "margin"):
            raise ValueError(f"stopping must be 'beta' or 'margin', got {self.stopping!r}")
        if not 1 <= self.round_size <= self.max_samples:
            raise ValueError(f"need 1 <= round_size <= max_samples, got {self}")

    @property
    def name(self) -> str:
        return f"adaptive_consistency[{self.stopping}]@{self.max_samples}"

    def decisive(self, v1: int, v2: int) -> bool:
        if self.stopping == "beta":
            return beta_confidence(v1, v2) >= self.threshold
        return v1 - v2 >= self.margin

    def run(
        self, questions: Sequence[Question], generator: Generator, rngs: Sequence[jax.Array]
    ) -> list[Result]:
        """Every round samples the questions not yet decided, in one call."""
        prompts = [q.prompt(q.num_frames) for q in questions]
        completions: list[list[Completion]] = [[] for _ in questions]
        spent, rounds = [Spent()] * len(questions), [0] * len(questions)
        votes: list[tuple[int, int]] = [(0, 0)] * len(questions)
        open_ = list(range(len(questions)))
        while open_:
            k = min(self.round_size, self.max_samples - len(completions[open_[0]]))
            keys = [jax.random.fold_in(rngs[i], rounds[i]) for i in open_]
            new = generator.sample_many([prompts[i] for i in open_], k, keys)
            still = []
            for i, (done, cost) in zip(open_, new, strict=True):
                completions[i] += done
                spent[i], rounds[i] = spent[i] + cost, rounds[i] + 1
                kind = answer_kind(questions[i].example)
                _, v1, v2 = vote_counts(_answers(questions[i], completions[i]), kind)
                votes[i] = (v1, v2)
                if not self.decisive(v1, v2) and len(completions[i]) < self.max_samples:
                    still.append(i)
            open_ = still
        return [
            self._result(q, c, s, r, v)
            for q, c, s, r, v in zip(questions, completions, spent, rounds, votes, strict=True)
        ]

    def _result(self, question, completions, spent, rounds, votes) -> Result:
        smaller = {}  # a cap of k samples stops at the same round or at k, same samples
        for k in smaller_budgets(self.max_samples, self.round_size):
            m = min(k, len(completions))
            cost = _prefix_spent(spent, completions, m, -(-m // self.round_size), rounds)
            smaller[k] = _voted(question, completions[:m], cost)
        result = _voted(question, completions, spent, rounds=rounds, votes=votes)
        return dataclasses.replace(result, at_budget=smaller)


# ----------------------------------------------------------------------------- sparse-to-dense
@dataclasses.dataclass(frozen=True, kw_only=True)
class SparseToDense(_OneQuestion):
    """Video-RTS's sparse-to-dense frames (Wang et al. 2025): at each frame count in `frames`
    (ascending) sample `n` answers; stop at the first level whose leader holds at least
    `agreement` of the n votes (1.0: unanimous), else re-encode the video with the next frame
    count. The answer is the vote of the last level run; `spent.frames` sums every level's."""

    frames: tuple[int, ...] = (4, 8, 16)
    n: int = 4
    agreement: float = 1.0

    def __post_init__(self):
        if not self.frames or list(self.frames) != sorted(set(self.frames)) or self.n < 1:
            raise ValueError(f"need strictly ascending frame counts and n >= 1, got {self}")

    @property
    def name(self) -> str:
        return f"sparse_to_dense{list(self.frames)}@{self.n}"

    def run(
        self, questions: Sequence[Question], generator: Generator, rngs: Sequence[jax.Array]
    ) -> list[Result]:
        """Each level samples, in one call, the questions still in disagreement."""
        results: list[Result | None] = [None] * len(questions)
        spent = [Spent()] * len(questions)
        open_ = list(range(len(questions)))
        for level, num_frames in enumerate(self.frames):
            prompts = [questions[i].prompt(num_frames) for i in open_]
            keys = [jax.random.fold_in(rngs[i], level) for i in open_]
            still = []
            for i, (completions, cost) in zip(
                open_, generator.sample_many(prompts, self.n, keys), strict=True
            ):
                q, spent[i] = questions[i], spent[i] + cost
                _, v1, _ = vote_counts(_answers(q, completions), answer_kind(q.example))
                info = {"frames_used": num_frames, "levels": level + 1}
                results[i] = _voted(q, completions, spent[i], **info)
                if v1 < self.agreement * self.n:
                    still.append(i)
            open_ = still
            if not open_:
                break
        return results


STRATEGIES: dict[str, type] = {
    "self_consistency": SelfConsistency,
    "best_of_n": BestOfN,
    "beam_search": BeamSearchStrategy,
    "adaptive_consistency": AdaptiveConsistency,
    "sparse_to_dense": SparseToDense,
}
SCORERS: dict[str, type] = {
    "mean_logprob": MeanLogProb,
    "reward": RewardScorer,
    "verifier": VerifierScorer,
}
