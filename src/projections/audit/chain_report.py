"""What checking the hash chain found, and how it reads to a person."""

from __future__ import annotations

from dataclasses import dataclass, field

from projections.audit.links import Digest, format_digest

# Problems kept in a report; beyond this they are only counted (a wholesale rewrite of the log
# would otherwise hold one object per row in memory, and nobody reads a million lines).
MAX_PROBLEMS = 1000


@dataclass(frozen=True)
class ChainProblem:
    """One violation: `kind` is `edited`, `deleted`, `inserted`, `chain_missing`,
    `digest_mismatch` or `digest_beyond_log`; `position` the log position involved."""

    kind: str
    position: int
    message: str

    def __str__(self) -> str:
        return f"hash chain: {self.kind} at position {self.position}: {self.message}"


@dataclass
class ChainReport:
    """What `verify_chain` found. `ok` when there is no problem."""

    records: int = 0  # stored records read
    linked: int = 0  # records checked against their stored link
    unlinked: int = 0  # records after the chain's reach: appended since the projection ran
    log_head: int = 0  # position of the newest record
    head: Digest | None = None  # the chain's newest stored link
    digest: Digest | None = None  # the digest checked, if any
    digest_ok: bool | None = None  # None without a digest
    problems: list[ChainProblem] = field(default_factory=list)
    omitted: int = 0  # problems beyond MAX_PROBLEMS, counted only

    @property
    def ok(self) -> bool:
        return not self.problems and not self.omitted

    def add(self, kind: str, position: int, message: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(ChainProblem(kind, position, message))
        else:
            self.omitted += 1

    def lines(self) -> list[str]:
        """One line per problem (and one for those omitted)."""
        out = [str(p) for p in self.problems]
        if self.omitted:
            out.append(f"hash chain: and {self.omitted} more problems")
        return out

    def summary(self) -> str:
        head = "no links yet" if self.head is None else f"head {format_digest(self.head)}"
        text = f"hash chain: {self.linked} of {self.records} records checked against it ({head})"
        if self.unlinked:
            text += f"; {self.unlinked} recorded after its head, not linked yet"
        if self.digest is not None:
            verdict = "matches" if self.digest_ok else "does NOT match"
            text += f"; digest {format_digest(self.digest)} {verdict}"
        if not self.ok:
            text += f"; {len(self.problems) + self.omitted} problems"
        return text
