"""Git for GitRepository, with dulwich: resolve a ref remotely, fetch shallowly, check out.

Everything here is blocking (network and disk); the reconciler runs it in a worker thread
under the object's ``spec.timeout``, which is also the socket timeout.

Ref resolution follows Flux's *code* (commit → name → tag → semver → branch, default
``master``), and revision strings are Flux's: ``main@sha1:<hex>``, ``v1.2.0@sha1:<hex>``,
``refs/pull/1/head@sha1:<hex>``, and ``sha1:<hex>`` for a bare commit.

``resolve`` needs only the ref advertisement (one ls-remote round trip): when the revision
it yields equals the stored artifact's, the reconciler skips the fetch entirely.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import urllib3
from dulwich.client import (
    GitClient,
    HttpGitClient,
    HTTPUnauthorized,
    SSHGitClient,
    SubprocessSSHVendor,
)
from dulwich.config import ConfigFile, parse_submodules
from dulwich.errors import GitProtocolError, HangupException, NotGitRepository
from dulwich.objects import Blob, Commit, Tag, Tree

from fluxd import semver
from fluxd.artifacts.ignore import (
    IGNORE_FILE,
    Matcher,
    Pattern,
    read_patterns,
    source_ignore_matcher,
)
from fluxd.artifacts.storage import ArtifactRecord, ArtifactStore, TreeEntry
from fluxd.controllers.source.gitpack import (
    MAX_INFLATED,
    MAX_OBJECT_SIZE,
    NoHaves,
    PackError,
    PackObjects,
    PackSpool,
    fetch_objects,
)
from fluxd.logging import strip_url_credentials

DEFAULT_BRANCH = "master"
_SHA = re.compile(r"^[0-9a-f]{40}$")


class GitError(Exception):
    """A Git operation failed; ``reason`` is Flux's condition reason."""

    def __init__(self, message: str, reason: str = "GitOperationFailed") -> None:
        super().__init__(strip_url_credentials(message))
        self.reason = reason


class AuthenticationFailed(GitError):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="AuthenticationFailed")


class URLInvalid(GitError):
    """The URL can never work: stall until the spec changes."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="URLInvalid")


@dataclass(frozen=True)
class Auth:
    """Credentials from the GitRepository's Secret (Flux's keys)."""

    username: str | None = None
    password: str | None = None
    bearer_token: str | None = None
    ca_pem: bytes | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    identity: bytes | None = None
    known_hosts: bytes | None = None

    @classmethod
    def from_secret(cls, data: dict[str, bytes]) -> Auth:
        def text(key: str) -> str | None:
            value = data.get(key)
            return value.decode() if value is not None else None

        if data.get("bearerToken") and (data.get("username") or data.get("password")):
            raise GitError("secret must contain either 'bearerToken' or 'username' and "
                           "'password', not both", reason="AuthenticationFailed")
        return cls(username=text("username"), password=text("password"),
                   bearer_token=text("bearerToken"),
                   ca_pem=data.get("ca.crt") or data.get("caFile"),
                   cert_pem=data.get("tls.crt") or data.get("certFile"),
                   key_pem=data.get("tls.key") or data.get("keyFile"),
                   identity=data.get("identity"), known_hosts=data.get("known_hosts"))


@dataclass(frozen=True)
class Ref:
    """``spec.ref``."""

    branch: str | None = None
    tag: str | None = None
    semver: str | None = None
    name: str | None = None
    commit: str | None = None

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> Ref:
        spec = spec or {}
        return cls(**{k: spec.get(k) or None for k in ("branch", "tag", "semver", "name",
                                                        "commit")})


@dataclass(frozen=True)
class Head:
    """What a ref resolved to on the remote."""

    #: the full ref fetched (refs/heads/main), or None for a bare commit
    ref: str | None
    #: the commit id (hex); for an annotated tag, the commit it points to
    commit: str | None
    #: Flux's revision string
    revision: str


@dataclass(frozen=True)
class Checkout:
    commit: str
    revision: str
    subject: str
    author: str


@dataclass
class Remote:
    """A connection to one repository URL with its credentials."""

    url: str
    auth: Auth = field(default_factory=Auth)
    timeout: float = 60.0
    #: largest Git object, and most a fetch may inflate to, in bytes (``[git]`` settings)
    max_object_size: int = MAX_OBJECT_SIZE
    max_fetch_size: int = MAX_INFLATED
    _tmp: list[Path] = field(default_factory=list)
    _pools: list[_TrackingPool] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_url(self.url)

    def client(self) -> tuple[GitClient, str]:
        parts = urlsplit(self.url)
        if parts.scheme in ("http", "https"):
            headers = {}
            if self.auth.bearer_token:
                headers["Authorization"] = f"Bearer {self.auth.bearer_token}"
            pool = _TrackingPool(
                headers=headers,
                cert_reqs="CERT_REQUIRED" if parts.scheme == "https" else None,
                ca_cert_data=self.auth.ca_pem.decode() if self.auth.ca_pem else None,
                cert_file=self._file(self.auth.cert_pem), key_file=self._file(self.auth.key_pem),
                timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout),
                retries=urllib3.Retry(total=2, redirect=5, raise_on_status=False),
            )
            self._pools.append(pool)
            base = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            http: GitClient = HttpGitClient(base, pool_manager=pool, username=self.auth.username,
                                   password=self.auth.password, extra_headers=headers,
                                   timeout=self.timeout, quiet=True)
            return http, parts.path or "/"
        # ssh://[user@]host[:port]/path, checked against known_hosts with the identity key
        if not self.auth.known_hosts:
            raise GitError("known_hosts is required for SSH: refusing unknown hosts",
                           reason="AuthenticationFailed")
        hosts = self._file(self.auth.known_hosts)
        command = (f"ssh -o BatchMode=yes -o StrictHostKeyChecking=yes "
                   f"-o UserKnownHostsFile={hosts} -o IdentitiesOnly=yes "
                   f"-o ConnectTimeout={int(self.timeout)}")
        vendor = SubprocessSSHVendor()
        ssh: GitClient = SSHGitClient(parts.hostname or "", port=parts.port,
                              username=parts.username or "git", vendor=vendor,
                              key_filename=self._file(self.auth.identity, mode=0o600),
                              ssh_command=command, quiet=True)
        return ssh, parts.path

    def _file(self, data: bytes | None, mode: int = 0o600) -> str | None:
        if data is None:
            return None
        tmp = Path(tempfile.mkdtemp(prefix="fluxd-git-"))
        self._tmp.append(tmp)
        path = tmp / "data"
        path.write_bytes(data if data.endswith(b"\n") else data + b"\n")
        path.chmod(mode)
        return str(path)

    def close(self) -> None:
        for pool in self._pools:
            pool.close_all()
        self._pools.clear()
        for tmp in self._tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        self._tmp.clear()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- operations -------------------------------------------------------------------

    def ls_remote(self) -> dict[str, str]:
        """Ref name → object id, with peeled tags as ``<tag>^{}``."""
        client, path = self.client()
        try:
            with _errors(self.url):
                result = client.get_refs(path.encode())
        finally:
            client.close()
        return {bytes(k).decode(): bytes(v).decode() for k, v in result.refs.items()
                if v is not None}

    def resolve(self, ref: Ref) -> Head:
        """The remote head ``ref`` names, in Flux's order of precedence."""
        if ref.commit:
            if not _SHA.match(ref.commit):
                raise GitError(f"invalid commit SHA '{ref.commit}'")
            if ref.branch:
                return Head(f"refs/heads/{ref.branch}", ref.commit,
                            f"{ref.branch}@sha1:{ref.commit}")
            return Head(None, ref.commit, f"sha1:{ref.commit}")
        refs = self.ls_remote()
        if ref.name:
            sha = refs.get(ref.name + "^{}") or refs.get(ref.name)
            if sha is None:
                raise GitError(f"unable to resolve ref '{ref.name}' to a specific commit")
            return Head(ref.name, sha, f"{ref.name}@sha1:{sha}")
        if ref.tag:
            full = f"refs/tags/{ref.tag}"
            sha = refs.get(full + "^{}") or refs.get(full)
            if sha is None:
                raise GitError(f"unable to resolve tag '{ref.tag}' to a specific commit")
            return Head(full, sha, f"{ref.tag}@sha1:{sha}")
        if ref.semver:
            return self._resolve_semver(ref.semver, refs)
        branch = ref.branch or DEFAULT_BRANCH
        full = f"refs/heads/{branch}"
        sha = refs.get(full)
        if sha is None:
            raise GitError(f"unable to clone '{self.url}': couldn't find remote ref "
                           f"'{full}'")
        return Head(full, sha, f"{branch}@sha1:{sha}")

    def _resolve_semver(self, expression: str, refs: dict[str, str]) -> Head:
        try:
            constraints = semver.parse_constraints(expression)
        except semver.SemverError as exc:
            raise GitError(f"semver parse error: {exc}") from exc
        tags = sorted(name[len("refs/tags/"):] for name in refs
                      if name.startswith("refs/tags/") and not name.endswith("^{}"))
        # Flux parses tags with its ParseVersion (a leading "v" allowed) and takes the
        # highest; versions equal but for build metadata would be ordered by tag commit
        # time, which an ls-remote does not tell: the later tag name wins then.
        found = semver.latest(((tag, tag) for tag in tags), constraints)
        if found is None:
            raise GitError(f"no match found for semver: {expression}")
        tag = found[1]
        full = f"refs/tags/{tag}"
        sha = refs.get(full + "^{}") or refs[full]
        return Head(full, sha, f"{tag}@sha1:{sha}")

    def fetch(self, head: Head, work: Path, *, depth: int | None = 1) -> PackObjects:
        """Fetch the commit ``head`` names: its objects, resolved from the pack in memory
        (spilling to files under ``work`` for large packs)."""
        work.mkdir(parents=True, exist_ok=True)
        client, path = self.client()
        wanted = head.commit

        def determine_wants(refs: Any, depth: int | None = None) -> Any:
            if head.ref is not None:
                # the ref's own object: a tag object for annotated tags (a tip the server
                # always serves); the commit is peeled from it after the fetch
                tip = refs.get(head.ref.encode())
                if tip is not None:
                    return [tip]
            return [wanted.encode()] if wanted else []

        def every_head(refs: Any, depth: int | None = None) -> Any:
            return sorted({sha for name, sha in refs.items()
                           if sha is not None and not name.endswith(b"^{}")})

        def fetch(wants: Any, depth: int | None) -> PackObjects:
            def receive(spool: PackSpool) -> object:
                return client.fetch_pack(path.encode(), wants, NoHaves(), spool.write,
                                         depth=depth)

            return fetch_objects(receive, spill_dir=work, max_object=self.max_object_size,
                                 max_total=self.max_fetch_size)

        try:
            with _errors(self.url):
                try:
                    return fetch(determine_wants, depth)
                except GitProtocolError:
                    if depth is None or head.ref is not None:
                        raise
                    # a bare commit the server won't serve shallowly: fetch all heads
                    return fetch(every_head, None)
        finally:
            client.close()

    def checkout(self, head: Head, dest: Path, *, sparse: list[str] | None = None,
                 submodules: bool = False) -> Checkout:
        """Materialise the tree of ``head`` in ``dest`` (created; must not exist)."""
        with tempfile.TemporaryDirectory(prefix="fluxd-clone-") as tmp:
            repo = self.fetch(head, Path(tmp))
            try:
                commit = _commit_of(repo, head)
                if head.commit and head.ref is None and commit.id.decode() != head.commit:
                    raise GitError(f"commit '{head.commit}' not found")
                dest.mkdir(parents=True)
                _write_tree(repo, commit.tree, dest, sparse_filter(sparse))
                if submodules:
                    self._submodules(repo, commit, dest)
            finally:
                repo.close()
        sha = commit.id.decode()
        return Checkout(commit=sha, revision=head.revision, subject=_subject(commit),
                        author=commit.author.decode(errors="replace"))

    def archive(self, head: Head, work: Path, *, store: ArtifactStore, kind: str,
                namespace: str, name: str, spec_ignore: str | None,
                sparse: list[str] | None = None) -> tuple[Checkout, ArtifactRecord]:
        """Fetch ``head`` and archive its tree straight from the Git objects: the bytes
        ``checkout`` + ``ArtifactStore.archive`` would give, without writing every file to
        disk and reading it back. (Submodules and includes need the checkout path.)"""
        repo = self.fetch(head, work)
        try:
            commit = _commit_of(repo, head)
            keep = sparse_filter(sparse)
            patterns = _tree_ignore_patterns(repo, commit.tree, keep)
            if spec_ignore is not None:
                patterns.extend(read_patterns(spec_ignore))
            matcher = source_ignore_matcher(patterns)
            sha = commit.id.decode()
            record = store.archive_entries(
                kind, namespace, name, _tree_entries(repo, commit.tree, matcher, keep),
                f"{sha}.tar.gz", revision=head.revision)
        except KeyError as exc:
            raise GitError(f"the fetched pack lacks object {exc.args[0]!r} of commit "
                           f"'{head.commit}'") from None
        finally:
            repo.close()
        return (Checkout(commit=sha, revision=head.revision, subject=_subject(commit),
                         author=commit.author.decode(errors="replace")), record)

    def _submodules(self, repo: PackObjects, commit: Commit, dest: Path) -> None:
        tree = repo[commit.tree]
        assert isinstance(tree, Tree)
        modules_blob = _lookup(repo, tree, ".gitmodules")
        if modules_blob is None:
            return
        config = ConfigFile.from_file(io.BytesIO(modules_blob.data))
        for path, url, _name in parse_submodules(config):
            rel = path.decode()
            entry = _lookup_entry(repo, tree, rel)
            if entry is None or entry[0] != 0o160000:
                continue
            sub_url = url.decode()
            if sub_url.startswith(("./", "../")):
                sub_url = urljoin(self.url.rstrip("/") + "/", sub_url)
            sub = Remote(sub_url, self.auth, self.timeout, self.max_object_size,
                         self.max_fetch_size)
            try:
                target = dest / rel
                if target.exists():
                    target.rmdir()
                sub.checkout(Head(None, entry[1], f"sha1:{entry[1]}"), target,
                             submodules=True)
            finally:
                sub.close()


class _TrackingPool(urllib3.PoolManager):
    """A pool that can close every response it handed out: dulwich leaves the response of
    a refused request (401, 404, …) open, which would leak its socket."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._responses: list[Any] = []

    def urlopen(  # type: ignore[override]  # the same call, kwargs passed on
            self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:
        response = super().urlopen(method, url, redirect=redirect, **kw)
        self._responses.append(response)
        return response

    def close_all(self) -> None:
        for response in self._responses:
            response.close()
        self._responses.clear()
        self.clear()


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ssh") or not parts.hostname:
        raise URLInvalid(f"invalid URL '{strip_url_credentials(url)}': the scheme must be "
                         "http, https or ssh, with a host")


class _errors:
    """Map dulwich and network failures to GitError with Flux's reasons."""

    def __init__(self, url: str) -> None:
        self.url = strip_url_credentials(url)

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> Literal[False]:
        if exc is None or isinstance(exc, GitError):
            return False
        if isinstance(exc, PackError):
            raise GitError(f"invalid pack from '{self.url}': {exc}") from None
        if isinstance(exc, HTTPUnauthorized):
            raise AuthenticationFailed(f"authentication required for '{self.url}'") from exc
        if isinstance(exc, NotGitRepository):
            raise GitError(f"repository not found: '{self.url}'") from exc
        if isinstance(exc, GitProtocolError | HangupException | OSError |
                      urllib3.exceptions.HTTPError | subprocess.SubprocessError):
            text = str(exc) or type(exc).__name__
            if "Permission denied" in text or "Host key verification failed" in text:
                raise AuthenticationFailed(f"ssh: {text.strip()}") from exc
            raise GitError(f"unable to reach '{self.url}': {text.strip()}") from exc
        return False


def _commit_of(repo: PackObjects, head: Head) -> Commit:
    sha = head.commit
    if head.ref is not None and not sha:
        raise GitError(f"no commit for {head.ref}")
    try:
        obj = repo[sha.encode()] if sha else None
        while isinstance(obj, Tag):
            obj = repo[obj.object[1]]
    except KeyError:
        # the branch moved between the ls-remote and the fetch; the next attempt
        # resolves the new head
        raise GitError(f"commit '{sha}' of {head.ref or 'the remote'} is no longer on "
                       "the remote: it moved on during the fetch") from None
    if not isinstance(obj, Commit):
        raise GitError(f"'{sha}' is not a commit")
    return obj


def _subject(commit: Commit) -> str:
    message: bytes = commit.message
    return message.decode(errors="replace").strip().split("\n", 1)[0]


def sparse_filter(dirs: list[str] | None) -> Callable[[str], bool]:
    """Whether a path is inside the sparse checkout (Flux trims a leading "./")."""
    if not dirs:
        return lambda _path: True
    roots = [d[2:] if d.startswith("./") else d for d in dirs]
    roots = [r.strip("/") for r in roots if r.strip("/")]

    def inside(path: str) -> bool:
        return any(path == r or path.startswith(r + "/") or r.startswith(path + "/")
                   for r in roots)

    return inside


def _write_tree(repo: PackObjects, tree_id: bytes, dest: Path, keep: Callable[[str], bool],
                prefix: str = "") -> None:
    tree = repo[tree_id]
    assert isinstance(tree, Tree)
    for entry in tree.iteritems():
        name = entry.path.decode(errors="surrogateescape")
        if "/" in name or name in (".", "..", ".git"):
            continue  # never trust tree entries to stay inside dest
        rel = f"{prefix}{name}"
        if not keep(rel):
            continue
        target = dest / name
        mode = entry.mode
        if mode & 0o170000 == 0o040000:
            target.mkdir()
            _write_tree(repo, entry.sha, target, keep, rel + "/")
        elif mode == 0o160000:
            target.mkdir()  # a submodule: filled in only with recurseSubmodules
        elif mode == 0o120000:
            blob = repo[entry.sha]
            assert isinstance(blob, Blob)
            target.symlink_to(blob.data.decode(errors="surrogateescape"))
        else:
            blob = repo[entry.sha]
            assert isinstance(blob, Blob)
            target.write_bytes(blob.data)
            if mode & 0o111:
                target.chmod(0o755)


_GITLINK = 0o160000
_SYMLINK = 0o120000


def _is_dir(mode: int) -> bool:
    return mode & 0o170000 == 0o040000


def _tree_ignore_patterns(repo: PackObjects, tree_id: bytes, keep: Callable[[str], bool],
                          domain: tuple[str, ...] = ()) -> list[Pattern]:
    """``.sourceignore`` patterns of a Git tree, as ``load_ignore_patterns`` reads them
    from a checkout: a directory's own file, then its subdirectories in name order."""
    tree = repo[tree_id]
    assert isinstance(tree, Tree)
    patterns: list[Pattern] = []
    subdirs = []
    for entry in tree.iteritems():
        name = entry.path.decode(errors="surrogateescape")
        rel = "/".join((*domain, name))
        if not keep(rel):
            continue
        if name == IGNORE_FILE and not _is_dir(entry.mode) and entry.mode != _SYMLINK:
            blob = repo[entry.sha]
            assert isinstance(blob, Blob)
            patterns.extend(read_patterns(blob.data.decode("utf-8", "surrogateescape"),
                                          domain))
        elif _is_dir(entry.mode) and name != ".git":
            subdirs.append((name, entry.sha))
    for name, sha in sorted(subdirs, key=lambda item: os.fsencode(item[0])):
        patterns.extend(_tree_ignore_patterns(repo, sha, keep, (*domain, name)))
    return patterns


def _tree_entries(repo: PackObjects, tree_id: bytes, matcher: Matcher,
                  keep: Callable[[str], bool]) -> Iterator[TreeEntry]:
    """The entries ``ArtifactStore.archive`` would take from the checked-out tree, in the
    same order: root first, depth first, names in byte order; symlinks left out;
    submodule directories empty; excluded directories skipped unless a ``!`` rule may
    bring something back."""
    prune = matcher.prunes()
    check = matcher.walk_checker()

    def visit(tree_id: bytes, parts: list[str]) -> Iterator[TreeEntry]:
        tree = repo[tree_id]
        assert isinstance(tree, Tree)
        entries = sorted(tree.iteritems(), key=lambda e: bytes(e.path))
        for entry in entries:
            name = entry.path.decode(errors="surrogateescape")
            if "/" in name or name in (".", "..", ".git"):
                continue
            child = [*parts, name]
            rel = "/".join(child)
            if not keep(rel) or entry.mode == _SYMLINK:
                continue
            is_dir = _is_dir(entry.mode) or entry.mode == _GITLINK
            excluded = check(child, is_dir)
            if is_dir:
                if not excluded:
                    yield TreeEntry(rel, True)
                if entry.mode != _GITLINK and not (excluded and prune):
                    yield from visit(entry.sha, child)
            elif not excluded:
                if repo.type_of(entry.sha) != Blob.type_num:
                    raise GitError(f"tree entry '{rel}' is not a blob")
                yield TreeEntry(rel, False, executable=bool(entry.mode & 0o111),
                                data=repo.data(entry.sha))

    yield TreeEntry(".", True)
    yield from visit(tree_id, [])


def _lookup_entry(repo: PackObjects, tree: Tree, path: str) -> tuple[int, str] | None:
    """(mode, object id) of the entry at ``path`` in ``tree``."""
    node: Tree = tree
    parts = PurePosixPath(path).parts
    for i, part in enumerate(parts):
        try:
            mode, sha = node[part.encode()]
        except KeyError:
            return None
        if i == len(parts) - 1:
            return int(mode), str(bytes(sha).decode())
        nxt = repo[sha]
        if not isinstance(nxt, Tree):
            return None
        node = nxt
    return None


def _lookup(repo: PackObjects, tree: Tree, path: str) -> Blob | None:
    entry = _lookup_entry(repo, tree, path)
    if entry is None:
        return None
    blob = repo[entry[1].encode()]
    return blob if isinstance(blob, Blob) else None
