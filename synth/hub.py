"""Upload a push plan to the Hugging Face Hub with ``huggingface_hub``, resumably.

Order: create the repo (and the branch), list what the Hub already has, upload the data files in
commits of bounded size, skipping every file whose content is already there, then one final
commit with the card, the manifests and the deletion of stale files in the folders this push
owns. The card comes last, so a repo never advertises configurations whose files are missing.
A failure at any point leaves committed files on the Hub and the local shards untouched; rerunning
the same command (with ``--exist-ok``) skips what is there and finishes.

The token comes from ``HF_TOKEN`` or the ``hf auth login`` cache, is handed to ``HfApi`` only,
and is never printed or logged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth.hub_plan import PlannedFile, PushPlan
from synth.shards import ShardConfig, parquet_writer


class PushError(RuntimeError):
    """A push that cannot go on; the message says what happened and what to do."""


RESUME_HINT = (
    "The local shards are untouched. Rerun the same command with --exist-ok to finish: files "
    "already on the Hub are skipped."
)


@dataclass
class PushResult:
    url: str
    commits: int = 0
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _same_content(local: Path | bytes, remote: Any) -> bool:
    """Whether a remote ``RepoFile`` holds these bytes: by sha256 for LFS files, else git oid."""
    if remote is None:
        return False
    if remote.lfs is not None:
        return isinstance(local, Path) and _sha256(local) == remote.lfs.sha256
    data = local.read_bytes() if isinstance(local, Path) else local
    return _git_sha1(data) == remote.blob_id


class _Stager:
    """Writes the per-configuration parts of mixed shards into a scratch folder, one source shard
    at a time and row group by row group; deterministic bytes, so a rerun's hashes match."""

    def __init__(self, root: Path):
        self.root = root
        self._done: set[str] = set()

    def path(self, planned: PlannedFile, plan: PushPlan) -> Path:
        if planned.split_key is None:
            return Path(planned.source)
        target = self.root / planned.path_in_repo
        if planned.source not in self._done:
            siblings = [
                f for f in plan.files if f.source == planned.source and f.split_key is not None
            ]
            self._split(Path(planned.source), siblings)
            self._done.add(planned.source)
        return target

    def _split(self, source: Path, parts: list[PlannedFile]) -> None:
        pf = pq.ParquetFile(source)
        schema = pf.schema_arrow
        writers: dict[str, pq.ParquetWriter] = {}
        shard_cfg = ShardConfig()
        try:
            for group in range(pf.num_row_groups):
                table = pf.read_row_group(group)
                for part in parts:
                    assert part.split_column is not None and part.split_key is not None
                    rows = table.filter(
                        pc.equal(table[part.split_column], pa.scalar(part.split_key))
                    )
                    if rows.num_rows == 0:
                        continue
                    if part.split_key not in writers:
                        target = self.root / part.path_in_repo
                        target.parent.mkdir(parents=True, exist_ok=True)
                        writers[part.split_key] = parquet_writer(target, schema, shard_cfg)
                    writers[part.split_key].write_table(
                        rows, row_group_size=shard_cfg.row_group_rows
                    )
        finally:
            for writer in writers.values():
                writer.close()

    def release(self, planned: PlannedFile) -> None:
        if planned.split_key is not None:
            (self.root / planned.path_in_repo).unlink(missing_ok=True)


def _batches(
    files: list[tuple[PlannedFile, int]], max_files: int, max_bytes: int
) -> Iterator[list[PlannedFile]]:
    batch: list[PlannedFile] = []
    size = 0
    for planned, nbytes in files:
        if batch and (len(batch) >= max_files or size + nbytes > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(planned)
        size += nbytes
    if batch:
        yield batch


def resolve_token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise PushError(
            "no Hugging Face token: set HF_TOKEN to a write token "
            "(https://huggingface.co/settings/tokens) or run `hf auth login`"
        )
    return token


def _describe(err: BaseException) -> str:
    """The cause of a failure, one line, without request headers (which hold the token)."""
    causes: list[str] = []
    cause: BaseException | None = err
    while cause is not None and len(causes) < 3:
        text = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
        if text not in causes:
            causes.append(text.rstrip(" :."))
        cause = cause.__cause__
    return " <- ".join(causes)


def push(
    plan: PushPlan, log: Callable[[str], None] = print, endpoint: str | None = None
) -> PushResult:
    """Upload ``plan``; raise ``PushError`` with a clear message on any failure."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import httpx  # the client's HTTP module (httpx2 in 2.x)

    opts = plan.options
    refusal = plan.template_refusal()
    if refusal is not None:
        raise PushError(refusal)
    token = resolve_token()
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token)
    revision = opts.revision or "main"
    repo_id = opts.repo_id
    result = PushResult(url=f"{endpoint}/datasets/{repo_id}")

    def http_status(err: BaseException) -> int | None:
        return (
            err.response.status_code
            if isinstance(err, HfHubHTTPError) and err.response is not None
            else None
        )

    try:
        api.create_repo(repo_id, repo_type="dataset", private=opts.private, exist_ok=opts.exist_ok)
    except HfHubHTTPError as err:
        status = http_status(err)
        if status == 409:
            raise PushError(
                f"the dataset repo {repo_id} already exists on {endpoint}; pass --exist-ok to "
                "upload into it (also to finish an interrupted push)"
            ) from None
        if status in (401, 403):
            raise PushError(
                f"the Hub refused the token ({status}) for creating {repo_id}: check that HF_TOKEN "
                "is a write token for that namespace"
            ) from None
        raise PushError(f"could not create {repo_id} on {endpoint}: {_describe(err)}") from None
    except httpx.HTTPError as err:
        raise PushError(f"could not reach {endpoint}: {_describe(err)}. {RESUME_HINT}") from None

    done_commits = 0
    stage_root = Path(tempfile.mkdtemp(prefix="chatumm-push-"))
    try:
        if revision != "main":
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
        remote = {
            f.path: f
            for f in api.list_repo_tree(
                repo_id, repo_type="dataset", revision=revision, recursive=True
            )
            if hasattr(f, "blob_id")
        }
        stager = _Stager(stage_root)
        pending: list[tuple[PlannedFile, int]] = []
        for planned in plan.files:
            local = stager.path(planned, plan)
            if _same_content(local, remote.get(planned.path_in_repo)):
                result.skipped.append(planned.path_in_repo)
                stager.release(planned)
            else:
                pending.append((planned, local.stat().st_size))
        if result.skipped:
            log(f"{len(result.skipped)} file(s) already on the Hub with the same content: skipped")
        batches = list(_batches(pending, opts.files_per_commit, opts.bytes_per_commit))
        for i, batch in enumerate(batches, start=1):
            ops = [CommitOperationAdd(f.path_in_repo, str(stager.path(f, plan))) for f in batch]
            configs = ", ".join(sorted({f.config for f in batch}))
            log(f"commit {i}/{len(batches)}: {len(batch)} file(s) of {configs}")
            api.create_commit(
                repo_id,
                ops,
                commit_message=f"Add {len(batch)} shard(s) of {configs} ({i}/{len(batches)})",
                repo_type="dataset",
                revision=revision,
            )
            done_commits += 1
            result.uploaded += [f.path_in_repo for f in batch]
            for f in batch:
                stager.release(f)
        final: list[Any] = []
        for path, content in {"README.md": plan.card.encode(), **plan.meta}.items():
            if _same_content(content, remote.get(path)):
                result.skipped.append(path)
            else:
                final.append(CommitOperationAdd(path, content))
        wanted = {f.path_in_repo for f in plan.files} | set(plan.meta) | {"README.md"}
        stale = sorted(p for p in remote if p.startswith(plan.managed_prefixes) and p not in wanted)
        final += [CommitOperationDelete(p) for p in stale]
        if final:
            log(
                f"final commit: card, {len(plan.meta)} metadata file(s), {len(stale)} stale file(s) deleted"
            )
            api.create_commit(
                repo_id,
                final,
                commit_message="Dataset card and run metadata (chatumm)",
                repo_type="dataset",
                revision=revision,
            )
            done_commits += 1
        result.deleted = stale
        result.uploaded += [op.path_in_repo for op in final if isinstance(op, CommitOperationAdd)]
    except (httpx.HTTPError, RuntimeError, OSError) as err:
        on_hub = len(result.skipped) + len(result.uploaded)
        raise PushError(
            f"push to {repo_id} ({revision}) interrupted after {done_commits} commit(s); "
            f"{on_hub} of {len(plan.files) + len(plan.meta) + 1} file(s) are on the Hub: "
            f"{_describe(err)}. {RESUME_HINT}"
        ) from err
    finally:
        shutil.rmtree(stage_root, ignore_errors=True)
    result.commits = done_commits
    return result
