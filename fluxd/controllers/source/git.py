"""Git for GitRepository, with dulwich: resolve a ref remotely, fetch shallowly, check out.

Everything here is blocking (network and disk); the reconciler runs it in a worker thread
under the object's ``spec.timeout``, which is also the socket timeout.

Ref resolution follows Flux's *code* (commit → name → tag → semver → branch, default
``master``), and revision strings are Flux's: ``main@sha1:<hex>``, ``v1.2.0@sha1:<hex>``,
``refs/pull/1/head@sha1:<hex>``, and ``sha1:<hex>`` for a bare commit.

``resolve`` needs only the ref advertisement (one ls-remote round trip): when the revision
it yields equals the stored artifact's, the reconciler skips the fetch entirely. Ref names
that are not UTF-8 (git allows them) cannot be named by a spec and are skipped.

A fetched repository is hostile until checked. Before anything of a commit is written or
archived, its whole tree passes git's fsck and checkout rules (``verify_tree``): no entry
named ``.``, ``..`` or ``.git`` (nor a name a filesystem takes for ``.git``), none holding
``/`` or NUL, no tree deeper than ``MAX_TREE_DEPTH``; a violation is a ``GitError`` naming
the path. Files are created exclusively, never through an existing name or symlink.
Submodules: a ``.gitmodules`` path must be a plain relative path onto a gitlink of the
tree, and is checked out only into the directory the checkout made for that gitlink,
``MAX_SUBMODULE_DEPTH`` levels deep at most.
Credentials go only to the GitRepository's own origin (scheme, host, port): submodules
elsewhere, and requests redirected elsewhere, go without them (Flux sends them to every
submodule URL).

Git stores a file or a tree once however often a tree names it, so a few KB of pack can
name millions of paths: one ``checkout`` or ``archive`` (its submodules included) expands
to at most ``max_checkout_entries`` entries walked and ``max_checkout_size`` bytes of file
contents, or fails naming the limit. Setting ``Remote.cancelled`` (from any thread) stops
the work at its next chunk received, object resolved or tree entry walked, with
``Cancelled``; its temporary files go with it.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import urllib3
from dulwich.client import (
    GitClient,
    HttpGitClient,
    HTTPUnauthorized,
    SSHGitClient,
    SubprocessSSHVendor,
)
from dulwich.config import ConfigFile, parse_submodules
from dulwich.errors import (
    GitProtocolError,
    HangupException,
    NotGitRepository,
    ObjectFormatException,
)
from dulwich.objects import Blob, Commit, ShaFile, Tag, Tree

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
    format_size,
)
from fluxd.logging import strip_url_credentials

log = logging.getLogger("fluxd.source.git")

DEFAULT_BRANCH = "master"
_SHA = re.compile(r"^[0-9a-f]{40}$")
#: the deepest tree a checkout accepts (git's own limit is 2048; real repositories stay far
#: below either, and the walks here recurse once per level)
MAX_TREE_DEPTH = 256
#: how deep submodules nest in a checkout (Flux's go-git DefaultSubmoduleRecursionDepth);
#: Flux leaves deeper ones empty, fluxd fails: a chain of submodules has no other end
MAX_SUBMODULE_DEPTH = 10
#: what one checkout (or archive) may expand to: bytes of file contents, and entries
#: (``[git] max_checkout_size``, ``max_checkout_entries``)
MAX_CHECKOUT_SIZE = 4 * 1024 * 1024 * 1024
MAX_CHECKOUT_ENTRIES = 1_000_000
_DEFAULT_PORTS = {"http": 80, "https": 443, "ssh": 22}


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


class Cancelled(GitError):
    """``Remote.cancelled`` was set: the reconcile timed out or is stopping."""

    def __init__(self) -> None:
        super().__init__("git operation cancelled: its reconcile timed out or is stopping")


class _SubmoduleFailed(GitError):
    """A submodule's failure, already named with its path: not wrapped again by the
    submodules around it."""


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

    def anonymous(self) -> Auth:
        """What may go to another origin: the trust anchors (CA, known hosts), no secret."""
        return Auth(ca_pem=self.ca_pem, known_hosts=self.known_hosts)


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
    #: most one checkout or archive may expand to (``[git]`` settings; see the module)
    max_checkout_size: int = MAX_CHECKOUT_SIZE
    max_checkout_entries: int = MAX_CHECKOUT_ENTRIES
    #: set by whoever waits for the work (from any thread) to stop it: ``Cancelled``
    cancelled: threading.Event = field(default_factory=threading.Event)
    _tmp: list[Path] = field(default_factory=list, init=False)
    _pools: list[_TrackingPool] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        check_url(self.url)

    def checkpoint(self) -> None:
        """Raise ``Cancelled`` once ``cancelled`` is set; every loop that lasts as long as
        the remote sends or the tree holds calls it (per chunk, object, entry)."""
        if self.cancelled.is_set():
            raise Cancelled

    def client(self) -> tuple[GitClient, str]:
        parts = urlsplit(self.url)
        if parts.scheme in ("http", "https"):
            headers = {}
            if self.auth.bearer_token:
                headers["Authorization"] = f"Bearer {self.auth.bearer_token}"
            pool = _TrackingPool(
                origin(self.url), headers=headers,
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
        """Ref name → object id, with peeled tags as ``<tag>^{}``; refs whose name is not
        UTF-8 are left out."""
        client, path = self.client()
        try:
            with _errors(self.url):
                result = client.get_refs(path.encode())
        finally:
            client.close()
        refs: dict[str, str] = {}
        for name, sha in result.refs.items():
            if sha is None:
                continue
            try:
                refs[bytes(name).decode()] = bytes(sha).decode("ascii")
            except UnicodeDecodeError:
                # git allows any bytes but a few in a ref name; one no spec can name must
                # not fail the resolution of every other ref of the repository
                log.debug("Skipping a ref whose name is not UTF-8",
                          extra={"ref": repr(bytes(name))})
        return refs

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
                                 max_total=self.max_fetch_size, checkpoint=self.checkpoint)

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
        """Materialise the tree of ``head`` in ``dest`` (created; must not exist). On
        failure, what was written stays in ``dest`` for the caller to remove."""
        return self._checkout(head, dest, sparse=sparse, submodules=submodules,
                              expansion=_Expansion(self), where="")

    def _checkout(self, head: Head, dest: Path, *, sparse: list[str] | None,
                  submodules: bool, expansion: _Expansion, where: str) -> Checkout:
        """``checkout`` into a share of ``expansion``; ``where`` is the path of this
        repository in the outermost checkout ("" for the outermost, else ending in /)."""
        with tempfile.TemporaryDirectory(prefix="fluxd-clone-") as tmp:
            repo = self.fetch(head, Path(tmp))
            try:
                commit = _commit_of(repo, head)
                if head.commit and head.ref is None and commit.id.decode() != head.commit:
                    raise GitError(f"commit '{head.commit}' not found")
                verify_tree(repo, commit.tree, expansion)
                keep = sparse_filter(sparse)
                dest.mkdir(parents=True)
                try:
                    _write_tree(repo, commit.tree, dest, keep, expansion)
                    if submodules:
                        self._submodules(repo, commit, dest, keep, expansion, where)
                except OSError as exc:
                    raise GitError(f"failed to write the checkout: {exc}") from exc
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
            verify_tree(repo, commit.tree, _Expansion(self))
            keep = sparse_filter(sparse)
            # two walks of the tree, each within the limits: what a checkout on disk
            # would hold, and what ``load_ignore_patterns`` would then read of it
            patterns = _tree_ignore_patterns(repo, commit.tree, keep, _Expansion(self))
            if spec_ignore is not None:
                patterns.extend(read_patterns(spec_ignore))
            matcher = source_ignore_matcher(patterns)
            sha = commit.id.decode()
            entries = _tree_entries(repo, commit.tree, matcher, keep, _Expansion(self))
            record = store.archive_entries(kind, namespace, name, entries,
                                           f"{sha}.tar.gz", revision=head.revision)
        except KeyError as exc:
            raise GitError(f"the fetched pack lacks object {exc.args[0]!r} of commit "
                           f"'{head.commit}'") from None
        finally:
            repo.close()
        return (Checkout(commit=sha, revision=head.revision, subject=_subject(commit),
                         author=commit.author.decode(errors="replace")), record)

    def _submodules(self, repo: PackObjects, commit: Commit, dest: Path,
                    keep: Callable[[str], bool], expansion: _Expansion, where: str) -> None:
        """Check out the submodules ``.gitmodules`` lists into the (empty) directories the
        checkout in ``dest`` made for their gitlinks, recursively, sharing ``expansion``;
        ``where`` is this checkout's path in the outermost one."""
        tree = _tree(repo, commit.tree, "")
        found = _lookup_entry(repo, tree, ".gitmodules")
        if found is None or _is_dir(found[0]) or found[0] == _GITLINK:
            return
        if found[0] == _SYMLINK:
            # git's fsck refuses it too (gitmodulesSymlink)
            raise GitError("refusing '.gitmodules': it is a symbolic link")
        modules = _blob(repo, found[1].encode(), ".gitmodules")
        try:
            config = ConfigFile.from_file(io.BytesIO(modules.data))
        except ValueError as exc:
            raise GitError(f"invalid .gitmodules: {exc}") from None
        root = dest.resolve()
        done: set[str] = set()
        for raw_path, raw_url, _name in parse_submodules(config):
            rel = _submodule_path(raw_path)
            if not keep(rel) or rel in done:
                continue  # outside the sparse checkout (no directory made), or listed twice
            done.add(rel)
            entry = _lookup_entry(repo, tree, rel)
            if entry is None or entry[0] != _GITLINK:
                continue  # no gitlink at that path: git ignores the section too
            shown = _shown(where + rel)
            expansion.checkpoint()
            if expansion.nesting >= MAX_SUBMODULE_DEPTH:
                raise _SubmoduleFailed(
                    f"submodule '{shown}' is nested deeper than the {MAX_SUBMODULE_DEPTH} "
                    "levels of submodules fluxd checks out")
            target = _directory_inside(root, rel)
            url = submodule_url(self.url, raw_url.decode(errors="surrogateescape"))
            same_origin = origin(url) == origin(self.url)
            # the parent's credentials are for the parent's origin only; the limits and
            # the cancellation are the parent's
            auth = self.auth if same_origin else self.auth.anonymous()
            try:
                sub = replace(self, url=url, auth=auth)
            except URLInvalid as exc:
                raise _SubmoduleFailed(f"submodule '{shown}': {exc}") from None
            with sub:
                target.rmdir()
                expansion.nesting += 1
                try:
                    sub._checkout(Head(None, entry[1], f"sha1:{entry[1]}"), target,
                                  sparse=None, submodules=True, expansion=expansion,
                                  where=f"{where}{rel}/")
                except (_SubmoduleFailed, Cancelled):
                    raise  # named where it happened, or no failure of this submodule
                except GitError as exc:
                    anonymous = "" if same_origin else (
                        " (another origin than the GitRepository's: fetched without its "
                        "credentials)")
                    raise _SubmoduleFailed(f"failed to check out submodule '{shown}' from "
                                           f"'{url}'{anonymous}: {exc}") from exc
                finally:
                    expansion.nesting -= 1


class _TrackingPool(urllib3.PoolManager):
    """A pool that can close every response it handed out: dulwich leaves the response of
    a refused request (401, 404, …) open, which would leak its socket."""

    def __init__(self, origin: tuple[str, str, int | None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._origin = origin
        self._responses: list[Any] = []

    def urlopen(  # type: ignore[override]  # the same call, kwargs passed on
            self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:
        if _url_origin(url, self._origin[0]) != self._origin:
            # dulwich rebases onto a redirect's target and goes on there with the pool's
            # headers: a token is for the repository's own origin only
            headers = kw.get("headers")
            kw["headers"] = {k: v for k, v in (headers or self.headers).items()
                             if k.lower() != "authorization"}
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
    try:
        parts.port  # noqa: B018  # raises on a port that is not a number in range
    except ValueError as exc:
        raise URLInvalid(f"invalid URL '{strip_url_credentials(url)}': {exc}") from None
    if parts.scheme not in ("http", "https", "ssh") or not parts.hostname:
        raise URLInvalid(f"invalid URL '{strip_url_credentials(url)}': the scheme must be "
                         "http, https or ssh, with a host")
    if parts.hostname.startswith("-") or (parts.username or "").startswith("-"):
        # ssh would read it as an option (git refuses such URLs for the same reason)
        raise URLInvalid(f"invalid URL '{strip_url_credentials(url)}': the host and user "
                         "may not start with '-'")


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``, the default port made explicit: what credentials
    are scoped to."""
    return _url_origin(url, "")


def _url_origin(url: str, default_scheme: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = (parts.scheme or default_scheme).lower()
    try:
        port = parts.port
    except ValueError:
        port = -1  # matches no real origin
    return scheme, parts.hostname or "", port or _DEFAULT_PORTS.get(scheme)


def submodule_url(parent: str, url: str) -> str:
    """A ``.gitmodules`` URL made absolute: ``./x`` and ``../x`` are relative to the
    parent's URL taken as a directory (git's rule), on the parent's scheme and host."""
    if not url.startswith(("./", "../")):
        return url
    parts = urlsplit(parent)
    path = posixpath.normpath(posixpath.join(parts.path.rstrip("/") + "/", url))
    return urlunsplit((parts.scheme, parts.netloc, "/" + path.lstrip("/"), "", ""))


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
    except ObjectFormatException as exc:
        raise GitError(f"malformed Git object on the way to commit '{sha}': {exc}") from None
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


_GITLINK = 0o160000
_SYMLINK = 0o120000


def _is_dir(mode: int) -> bool:
    return mode & 0o170000 == 0o040000


# Code points HFS+ ignores when it compares names (git's is_hfs_dotgit).
_HFS_IGNORED = frozenset("\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                         "\u206a\u206b\u206c\u206d\u206e\u206f\ufeff")


def _unsafe_name(name: str) -> bool:
    """Whether ``name`` may not be a path component of a checkout (git's fsck and
    ``verify_path``): empty, ``.``, ``..``, holding ``/`` or NUL, or ``.git`` as some
    filesystem reads it — any case, NTFS's trailing dots and spaces, ``:stream`` suffix
    and short name ``git~1``, HFS+'s ignored code points."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        return True
    if name.isascii():
        # nearly every name: no HFS+ ignored code point, and only names starting with
        # '.' or 'g' can fold to .git or git~1
        if name[0] not in ".gG":
            return False
        folded = name
    else:
        folded = "".join(c for c in name if c not in _HFS_IGNORED)
    return folded.lower().split(":", 1)[0].rstrip(". ") in (".git", "git~1")


def _shown(path: str) -> str:
    """``path`` fit for a message: control and undecodable characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)


def _entry_name(raw: bytes, prefix: str) -> str:
    """A tree entry's name as a path component; a ``GitError`` naming the path when it is
    not one a checkout may write."""
    name = raw.decode(errors="surrogateescape")
    if _unsafe_name(name):
        raise GitError(f"invalid path '{_shown(prefix + name)}' in the commit's tree: a tree "
                       "entry may not be named '.', '..' or '.git', nor hold '/' or NUL")
    return name


def _tree(repo: PackObjects, sha: bytes, path: str) -> Tree:
    obj = _object(repo, sha, path)
    if not isinstance(obj, Tree):
        raise GitError(f"tree entry '{_shown(path)}' is not a tree")
    return obj


def _blob(repo: PackObjects, sha: bytes, path: str) -> Blob:
    obj = _object(repo, sha, path)
    if not isinstance(obj, Blob):
        raise GitError(f"tree entry '{_shown(path)}' is not a blob")
    return obj


def _object(repo: PackObjects, sha: bytes, path: str) -> ShaFile:
    try:
        return repo[sha]
    except KeyError:
        raise GitError(f"the fetched pack lacks object {sha.decode(errors='replace')!r} "
                       f"of '{_shown(path) or '/'}'") from None
    except ObjectFormatException as exc:
        raise GitError(f"malformed Git object at '{_shown(path) or '/'}': {exc}") from None


class _Expansion:
    """What one checkout or archive has expanded the fetched objects to so far, its
    submodules included: entries walked (files, directories, links, gitlinks) and bytes
    of file contents, against the ``[git]`` limits. Every walk counts each entry as it
    reaches it, before writing anything, and so also stops there once cancelled."""

    def __init__(self, remote: Remote) -> None:
        self.checkpoint = remote.checkpoint
        self._max_size = remote.max_checkout_size
        self._max_entries = remote.max_checkout_entries
        self._size = 0
        self._entries = 0
        #: submodule levels above the checkout being walked
        self.nesting = 0

    def entry(self, path: str) -> None:
        self.checkpoint()
        self._entries += 1
        if self._entries > self._max_entries:
            raise GitError(f"the commit's tree expands to more than {self._max_entries} "
                           "entries (files, directories, links; submodules included), "
                           "fluxd's limit for one checkout ([git] max_checkout_entries): "
                           f"stopped at '{_shown(path)}'")

    def content(self, path: str, size: int) -> None:
        self._size += size
        if self._size > self._max_size:
            raise GitError(f"the commit's files expand past {format_size(self._max_size)} "
                           "(submodules included), fluxd's limit for one checkout ([git] "
                           f"max_checkout_size): stopped at '{_shown(path)}'")


def verify_tree(repo: PackObjects, tree_id: bytes, expansion: _Expansion) -> None:
    """Check the whole tree of a commit before any of it is written or archived: every
    entry's name (see ``_entry_name``), every subtree present and a tree, at most
    ``MAX_TREE_DEPTH`` levels. Each tree object is read once, however often it is
    referenced: its height (levels below it) is computed once, bottom-up. (Only the
    cancellation of ``expansion`` applies: this walk is bounded by the fetch.)"""
    subtrees: dict[bytes, list[bytes]] = {}
    heights: dict[bytes, int] = {}
    # depth first without recursion: a tree is entered, then left once its subtrees are
    pending: list[tuple[bytes, str, bool]] = [(tree_id, "", False)]
    while pending:
        sha, prefix, leaving = pending.pop()
        if leaving:
            heights[sha] = 1 + max((heights[s] for s in subtrees[sha]), default=0)
            continue
        if sha in subtrees:
            continue  # already entered (a tree referenced twice)
        subtrees[sha] = []
        pending.append((sha, prefix, True))
        expansion.checkpoint()
        for entry in _tree(repo, sha, prefix.rstrip("/")).iteritems():
            name = _entry_name(entry.path, prefix)
            if _is_dir(entry.mode):
                subtrees[sha].append(entry.sha)
                pending.append((entry.sha, f"{prefix}{name}/", False))
    if heights[tree_id] > MAX_TREE_DEPTH:
        raise GitError(f"the commit's tree is nested {heights[tree_id]} levels deep, deeper "
                       f"than the {MAX_TREE_DEPTH} levels fluxd checks out")


def _write_tree(repo: PackObjects, tree_id: bytes, dest: Path, keep: Callable[[str], bool],
                expansion: _Expansion, prefix: str = "") -> None:
    for entry in _tree(repo, tree_id, prefix.rstrip("/")).iteritems():
        name = _entry_name(entry.path, prefix)
        rel = f"{prefix}{name}"
        expansion.entry(rel)
        if not keep(rel):
            continue
        target = dest / name
        mode = entry.mode
        if _is_dir(mode):
            target.mkdir()
            _write_tree(repo, entry.sha, target, keep, expansion, rel + "/")
        elif mode == _GITLINK:
            target.mkdir()  # a submodule: filled in only with recurseSubmodules
        elif mode == _SYMLINK:
            link = _blob(repo, entry.sha, rel).data
            expansion.content(rel, len(link))
            target.symlink_to(link.decode(errors="surrogateescape"))
        else:
            data = _blob(repo, entry.sha, rel).data
            expansion.content(rel, len(data))
            _write_file(target, data, executable=bool(mode & 0o111))


def _write_file(target: Path, data: bytes, *, executable: bool) -> None:
    # created exclusively and without following a symlink: a name already there (a
    # symlink above all) is an error, never a way to write elsewhere
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o666)
    with os.fdopen(fd, "wb") as out:
        if executable:
            os.fchmod(out.fileno(), 0o755)
        out.write(data)


def _submodule_path(raw: bytes) -> str:
    """A ``.gitmodules`` path as a relative path of the checkout; a ``GitError`` naming it
    when it is absolute, has an empty, ``.``, ``..`` or ``.git`` component, or starts
    with ``-`` (git's fsck: gitmodulesPath)."""
    path = raw.decode(errors="surrogateescape")
    parts = path.removesuffix("/").split("/")
    if path.startswith(("/", "-")) or any(_unsafe_name(part) for part in parts):
        raise GitError(f"invalid submodule path '{_shown(path)}' in .gitmodules: it must be "
                       "a relative path inside the repository, without '.', '..' or '.git'")
    return "/".join(parts)


def _directory_inside(root: Path, rel: str) -> Path:
    """``root/rel`` when it is a directory reached from ``root`` through directories
    only (no symlink) and resolves inside ``root``; else a ``GitError``."""
    target = root
    for part in rel.split("/"):
        target = target / part
        if target.is_symlink() or not target.is_dir():
            raise GitError(f"submodule path '{_shown(rel)}' is not a directory of the "
                           "checkout")
    if not target.resolve().is_relative_to(root):
        raise GitError(f"submodule path '{_shown(rel)}' leads outside the checkout")
    return target


def _tree_ignore_patterns(repo: PackObjects, tree_id: bytes, keep: Callable[[str], bool],
                          expansion: _Expansion,
                          domain: tuple[str, ...] = ()) -> list[Pattern]:
    """``.sourceignore`` patterns of a Git tree, as ``load_ignore_patterns`` reads them
    from a checkout: a directory's own file, then its subdirectories in name order."""
    prefix = "".join(f"{part}/" for part in domain)
    patterns: list[Pattern] = []
    subdirs = []
    for entry in _tree(repo, tree_id, prefix.rstrip("/")).iteritems():
        name = _entry_name(entry.path, prefix)
        rel = prefix + name
        expansion.entry(rel)
        if not keep(rel):
            continue
        if name == IGNORE_FILE and not _is_dir(entry.mode) and entry.mode != _SYMLINK:
            data = _blob(repo, entry.sha, rel).data
            expansion.content(rel, len(data))
            patterns.extend(read_patterns(data.decode("utf-8", "surrogateescape"), domain))
        elif _is_dir(entry.mode):
            subdirs.append((name, entry.sha))
    for name, sha in sorted(subdirs, key=lambda item: os.fsencode(item[0])):
        patterns.extend(_tree_ignore_patterns(repo, sha, keep, expansion, (*domain, name)))
    return patterns


def _tree_entries(repo: PackObjects, tree_id: bytes, matcher: Matcher,
                  keep: Callable[[str], bool], expansion: _Expansion) -> Iterator[TreeEntry]:
    """The entries ``ArtifactStore.archive`` would take from the checked-out tree, in the
    same order: root first, depth first, names in byte order; symlinks left out;
    submodule directories empty; excluded directories skipped unless a ``!`` rule may
    bring something back."""
    prune = matcher.prunes()
    check = matcher.walk_checker()

    def visit(tree_id: bytes, parts: list[str]) -> Iterator[TreeEntry]:
        prefix = "".join(f"{part}/" for part in parts)
        tree = _tree(repo, tree_id, prefix.rstrip("/"))
        entries = sorted(tree.iteritems(), key=lambda e: bytes(e.path))
        for entry in entries:
            name = _entry_name(entry.path, prefix)
            child = [*parts, name]
            rel = "/".join(child)
            expansion.entry(rel)
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
                data = repo.data(entry.sha)
                expansion.content(rel, len(data))
                yield TreeEntry(rel, False, executable=bool(entry.mode & 0o111), data=data)

    yield TreeEntry(".", True)
    yield from visit(tree_id, [])


def _lookup_entry(repo: PackObjects, tree: Tree, path: str) -> tuple[int, str] | None:
    """(mode, object id) of the entry at ``path`` (a checked relative path) in ``tree``,
    descending through subtrees only."""
    node: Tree = tree
    parts = path.split("/")
    walked = ""
    for i, part in enumerate(parts):
        try:
            mode, sha = node[part.encode(errors="surrogateescape")]
        except KeyError:
            return None
        if i == len(parts) - 1:
            return int(mode), str(bytes(sha).decode())
        if not _is_dir(mode):
            return None
        walked += f"{part}/"
        node = _tree(repo, sha, walked.rstrip("/"))
    return None
