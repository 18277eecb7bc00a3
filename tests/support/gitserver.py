"""A real git server for tests, on loopback only, and helpers that build its repositories.

``GitServer`` runs ``git http-backend`` (CGI) behind a small aiohttp front in a daemon
thread with an event loop of its own, so tests drive it from subprocesses (the git CLI),
from synchronous clients (dulwich) and from their own event loops alike. The front
enforces the configured auth, turns each request into a CGI environment (RFC 3875),
streams bodies both ways, kills the backend when the client goes away or the request
outlives its timeout, and counts what was asked for and how much pack data was sent.

With ``tls=True`` the front speaks HTTPS with a certificate for 127.0.0.1/localhost from a
throw-away ``pki.CertificateAuthority`` (``ca_pem``); with ``client_ca=True`` it also demands a
client certificate signed by that CA (``client_cert_pem``/``client_key_pem``).

``SshGitServer`` serves the same directory over SSH with Debian's ``sshd`` when it is
installed (``ensure_sshd`` says what to install when it is not).

The repository helpers (``make_repo``, ``commit``, ``tag``, ``branch``, ``head``,
``add_submodule``, ``make_large_repo``) write bare repositories with ``git fast-import``
and friends under a fixed identity and a per-repository clock, so the same sequence of
calls always yields the same commit ids. ``commit_raw_tree`` and ``raw_ref`` write what
git itself refuses to make (tree entries named ``..`` or ``.git``, ref names that are not
UTF-8) straight into the repository, as a hostile or careless server would serve them.
Every git invocation has a timeout and runs with an isolated environment: a private
``HOME``, ``GIT_CONFIG_NOSYSTEM=1``, no prompts and no proxy variables.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import contextlib
import hmac
import os
import pwd
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, quote

from aiohttp import web
from dulwich.objects import Blob, Commit, ObjectID, Tree
from dulwich.repo import Repo as DulwichRepo
from multidict import CIMultiDict

from tests.support.pki import CertificateAuthority

HOST = "127.0.0.1"
#: how long one git CLI invocation may take before it is killed
GIT_TIMEOUT = 120.0
#: the first commit's timestamp; each further commit or annotated tag is a minute later
EPOCH = 1_700_000_000
AUTHOR_NAME = "Flux Test"
AUTHOR_EMAIL = "flux-test@example.com"

_CHUNK = 64 * 1024

# --------------------------------------------------------------------------------------
# Running the git CLI
# --------------------------------------------------------------------------------------

_home_lock = threading.Lock()
_home: Path | None = None


def isolated_home() -> Path:
    """A private, empty HOME for git (created once per process, removed at exit)."""
    global _home
    with _home_lock:
        if _home is None:
            _home = Path(tempfile.mkdtemp(prefix="fluxd-git-home-"))
            atexit.register(shutil.rmtree, _home, True)
        return _home


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every git invocation here runs with.

    Built from scratch rather than from ``os.environ``: no ``GIT_DIR`` or proxy leaks in,
    there is no global or system config, and git never prompts for credentials.
    """
    home = isolated_home()
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "LANG": "C",
        "LC_ALL": "C",
        "TZ": "UTC",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": AUTHOR_NAME,
        "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
        "GIT_COMMITTER_NAME": AUTHOR_NAME,
        "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
        "NO_PROXY": "*",
        "no_proxy": "*",
    }
    env.update(extra or {})
    return env


class GitCommandError(AssertionError):
    """A git invocation failed; carries its output for the test report."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str):
        super().__init__(f"git {' '.join(args)} failed ({returncode}):\n{stdout}\n{stderr}")
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def _run_git(args: Sequence[str | Path], *, cwd: Path | str | None, input: bytes | None,
             env: Mapping[str, str] | None, timeout: float,
             check: bool) -> subprocess.CompletedProcess[bytes]:
    argv = ["git", *(str(a) for a in args)]
    done = subprocess.run(argv, cwd=cwd, input=input, capture_output=True,
                          env=git_env(env), timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise GitCommandError(argv[1:], done.returncode,
                              done.stdout.decode(errors="replace"),
                              done.stderr.decode(errors="replace"))
    return done


def git(*args: str | Path, cwd: Path | str | None = None, input: str | None = None,
        env: Mapping[str, str] | None = None, timeout: float = GIT_TIMEOUT,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the git CLI (isolated, bounded) and return its text output.

    ``env`` adds to the isolated environment, e.g. ``{"GIT_TRACE_PACKET": "1"}``.
    Raises ``GitCommandError`` on failure unless ``check=False``.
    """
    done = _run_git(args, cwd=cwd, input=None if input is None else input.encode(),
                    env=env, timeout=timeout, check=check)
    return subprocess.CompletedProcess(done.args, done.returncode,
                                       done.stdout.decode(errors="replace"),
                                       done.stderr.decode(errors="replace"))


_exec_path: str | None = None


def http_backend_path() -> str:
    """``$(git --exec-path)/git-http-backend``."""
    global _exec_path
    if _exec_path is None:
        _exec_path = git("--exec-path", timeout=30).stdout.strip()
    return os.path.join(_exec_path, "git-http-backend")


# --------------------------------------------------------------------------------------
# Building repositories
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class File:
    """A tree entry with an explicit mode: ``100644``, ``100755`` or ``120000`` (symlink,
    whose data is the link target)."""

    data: bytes | str
    mode: str = "100644"


#: what a path maps to in ``files``: its content, a ``File``, or None to delete it
FileValue = bytes | str | File | None


@dataclass
class Repo:
    """A bare repository under a server root, and its commit clock."""

    name: str
    path: Path
    branch: str = "main"
    #: the timestamp of the last commit or annotated tag written (the first is ``EPOCH``)
    clock: int = EPOCH - 60

    def git(self, *args: str | Path, timeout: float = GIT_TIMEOUT) -> str:
        """Run git against this repository and return its stripped stdout."""
        return git("--git-dir", self.path, *args, timeout=timeout).stdout.strip()

    def tick(self, date: int | None = None) -> int:
        """The timestamp for the next object: ``date``, else a minute after the last."""
        self.clock = self.clock + 60 if date is None else date
        return self.clock


def repo_dir(root: Path | str, name: str) -> Path:
    """Where repository ``name`` (``"app"`` or ``"org/app"``) lives under ``root``."""
    name = name.removesuffix(".git").strip("/")
    if not name or ".." in name.split("/"):
        raise ValueError(f"bad repository name {name!r}")
    return Path(root) / f"{name}.git"


def _quote_path(path: str) -> str:
    if "\n" in path or path.startswith('"') or "\\" in path:
        escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    return path


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


def _exists(repo: Repo, ref: str) -> bool:
    return _run_git(["--git-dir", repo.path, "rev-parse", "--verify", "--quiet",
                     f"{ref}^{{commit}}"], cwd=None, input=None, env=None,
                    timeout=GIT_TIMEOUT, check=False).returncode == 0


def _fast_import(repo: Repo, ref: str, message: str, files: Iterable[tuple[str, FileValue]],
                 *, date: int | None, gitlinks: Mapping[str, str] | None = None) -> str:
    """Write one commit on ``ref`` and return its id. Its parent is the tip of ``ref``;
    for a new branch, the tip of the repository's branch (none in an empty repository)."""
    default = f"refs/heads/{repo.branch}"
    parent = ref if _exists(repo, ref) else default if _exists(repo, default) else None
    stamp = f"{repo.tick(date)} +0000"
    msg = _as_bytes(message if message.endswith("\n") else message + "\n")
    out = bytearray()
    out += f"commit {ref}\n".encode()
    out += f"author {AUTHOR_NAME} <{AUTHOR_EMAIL}> {stamp}\n".encode()
    out += f"committer {AUTHOR_NAME} <{AUTHOR_EMAIL}> {stamp}\n".encode()
    out += b"data %d\n" % len(msg) + msg
    if parent is not None:
        out += f"from {parent}^0\n".encode()
    for path, value in files:
        quoted = _quote_path(path).encode()
        if value is None:
            out += b"D " + quoted + b"\n"
            continue
        entry = value if isinstance(value, File) else File(value)
        data = _as_bytes(entry.data)
        out += b"M " + entry.mode.encode() + b" inline " + quoted + b"\n"
        out += b"data %d\n" % len(data) + data + b"\n"
    for path, sha in (gitlinks or {}).items():
        out += f"M 160000 {sha} {_quote_path(path)}\n".encode()
    out += b"done\n"
    _run_git(["--git-dir", repo.path, "fast-import", "--quiet", "--done", "--date-format=raw"],
             cwd=None, input=bytes(out), env=None, timeout=GIT_TIMEOUT, check=True)
    return repo.git("rev-parse", "--verify", f"{ref}^{{commit}}")


def make_repo(root: Path | str, name: str, files: Mapping[str, FileValue], *,
              branch: str = "main", message: str = "initial commit",
              date: int | None = None) -> Repo:
    """A bare repository ``<root>/<name>.git`` whose ``branch`` (also HEAD) holds ``files``.

    With ``files`` empty the repository has no commit at all.
    """
    path = repo_dir(root, name)
    if path.exists():
        raise FileExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    git("init", "--quiet", "--bare", f"--initial-branch={branch}", path)
    repo = Repo(name=name.removesuffix(".git").strip("/"), path=path, branch=branch)
    if files:
        commit(repo, files, message, date=date)
    return repo


def commit(repo: Repo, files: Mapping[str, FileValue], message: str = "update", *,
           branch: str | None = None, date: int | None = None) -> str:
    """Commit ``files`` (path → content; None deletes) on ``branch`` (default the
    repository's branch) and return the new commit id. A new branch forks from the
    repository's branch, as ``git switch -c`` would."""
    ref = f"refs/heads/{branch or repo.branch}"
    return _fast_import(repo, ref, message, sorted(files.items()), date=date)


def branch(repo: Repo, name: str, start: str | None = None) -> str:
    """Create branch ``name`` at ``start`` (default the repository's branch); its id."""
    repo.git("branch", name, start or f"refs/heads/{repo.branch}")
    return head(repo, f"refs/heads/{name}")


def tag(repo: Repo, name: str, *, annotated: bool = False, ref: str | None = None,
        message: str | None = None, date: int | None = None) -> str:
    """Tag ``ref`` (default the repository's branch) and return what ``refs/tags/<name>``
    points at: the tag object for an annotated tag, the commit for a lightweight one."""
    target = head(repo, ref)
    if annotated:
        stamp = f"{repo.tick(date)} +0000"
        git("--git-dir", repo.path, "tag", "-a", "-m", message or f"release {name}", name,
            target, env={"GIT_COMMITTER_DATE": stamp})
    else:
        repo.git("tag", name, target)
    return repo.git("rev-parse", "--verify", f"refs/tags/{name}")


def head(repo: Repo, ref: str | None = None) -> str:
    """The commit id ``ref`` resolves to (tags peeled); default the repository's branch."""
    return repo.git("rev-parse", "--verify", "--end-of-options",
                    f"{ref or f'refs/heads/{repo.branch}'}^{{commit}}")


def refs(repo: Repo) -> dict[str, str]:
    """Every ref of the repository and the object it points at."""
    out = repo.git("for-each-ref", "--format=%(refname) %(objectname)")
    pairs = (line.split(" ", 1) for line in out.splitlines() if line)
    return {name: sha for name, sha in pairs}


def add_submodule(repo: Repo, path: str, sub: Repo, url: str, *, ref: str | None = None,
                  message: str | None = None, branch: str | None = None,
                  date: int | None = None) -> str:
    """Commit a submodule at ``path`` pointing at ``sub``'s ``ref`` (default its branch),
    registered in ``.gitmodules`` with ``url`` (e.g. ``server.repo_url(sub.name)``)."""
    target_ref = f"refs/heads/{branch or repo.branch}"
    current = _run_git(["--git-dir", repo.path, "cat-file", "blob", f"{target_ref}:.gitmodules"],
                       cwd=None, input=None, env=None, timeout=GIT_TIMEOUT, check=False)
    modules = current.stdout.decode() if current.returncode == 0 else ""
    modules += f'[submodule "{path}"]\n\tpath = {path}\n\turl = {url}\n'
    return _fast_import(repo, target_ref, message or f"add submodule {path}",
                        [(".gitmodules", modules)], date=date,
                        gitlinks={path: head(sub, ref)})


@dataclass(frozen=True)
class Gitlink:
    """A submodule entry of a crafted tree: the commit it pins."""

    commit: str


#: a crafted tree: entry name (raw bytes, names git refuses included) → a blob's content,
#: a ``File``, a ``Gitlink`` or a subtree
RawTree = Mapping[bytes, "bytes | str | File | Gitlink | RawTree"]


def commit_raw_tree(repo: Repo, tree: RawTree, message: str = "crafted tree", *,
                    branch: str | None = None, date: int | None = None) -> str:
    """Commit ``tree`` exactly as given on ``branch`` (default the repository's), after its
    tip, and return the commit id. The objects go straight into the object store with
    dulwich, so entries git never creates (``..``, ``.git``, names holding ``/``) get in,
    as on a server that does not fsck what it is pushed. A subtree given as the same
    mapping object at several places is written once, as Git would store it: ten
    references per level to the next level's tree make a tree bomb of a few objects."""
    ref = f"refs/heads/{branch or repo.branch}"
    parent = head(repo, ref) if _exists(repo, ref) else None
    with DulwichRepo(str(repo.path)) as store:
        objects = store.object_store
        written: dict[int, ObjectID] = {}  # id() of a mapping (all alive) → its tree

        def write(entries: RawTree) -> ObjectID:
            if id(entries) in written:
                return written[id(entries)]
            node = Tree()
            for name, value in entries.items():
                if isinstance(value, Gitlink):
                    node.add(name, 0o160000, ObjectID(value.commit.encode()))
                elif isinstance(value, Mapping):
                    node.add(name, 0o040000, write(value))
                else:
                    entry = value if isinstance(value, File) else File(value)
                    blob = Blob.from_string(_as_bytes(entry.data))
                    objects.add_object(blob)
                    node.add(name, int(entry.mode, 8), blob.id)
            objects.add_object(node)
            written[id(entries)] = node.id
            return node.id

        made = Commit()
        made.tree = write(tree)
        made.parents = [ObjectID(parent.encode())] if parent else []
        made.author = made.committer = f"{AUTHOR_NAME} <{AUTHOR_EMAIL}>".encode()
        made.author_time = made.commit_time = repo.tick(date)
        made.author_timezone = made.commit_timezone = 0
        made.message = _as_bytes(message if message.endswith("\n") else message + "\n")
        objects.add_object(made)
    sha = made.id.decode()
    repo.git("update-ref", ref, sha)
    return sha


def raw_ref(repo: Repo, name: bytes, commit: str) -> None:
    """Point ref ``name`` (raw bytes: e.g. ``b"refs/heads/caf\xe9"``, not UTF-8) at
    ``commit`` by writing the loose ref file, which no git command would name."""
    path = os.path.join(os.fsencode(repo.path), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(commit.encode() + b"\n")


def large_tree(count: int = 5000, *, per_dir: int = 100, seed: int = 0) -> dict[str, str]:
    """``count`` small, distinct YAML manifests spread over directories (deterministic)."""
    rng = random.Random(seed)
    files: dict[str, str] = {}
    for i in range(count):
        files[f"apps/group-{i // per_dir:03d}/configmap-{i:05d}.yaml"] = (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            f"  name: cm-{i:05d}\n  namespace: group-{i // per_dir:03d}\n"
            f"data:\n  index: \"{i}\"\n  token: \"{rng.getrandbits(64):016x}\"\n")
    return files


def make_large_repo(root: Path | str, name: str, *, files: int = 5000,
                    branch: str = "main") -> Repo:
    """A repository of ``files`` manifests in one commit, for benchmarks."""
    return make_repo(root, name, large_tree(files), branch=branch,
                     message=f"{files} manifests")


# --------------------------------------------------------------------------------------
# Auth
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoAuth:
    """Anyone may read (and push, with ``allow_push``)."""


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic: e.g. a Gitea user with a token as the password."""

    username: str
    password: str


@dataclass(frozen=True)
class BearerAuth:
    """``Authorization: Bearer <token>``; ``username`` becomes REMOTE_USER."""

    token: str
    username: str = "bearer"


Auth = NoAuth | BasicAuth | BearerAuth


def _authenticate(accepted: Sequence[Auth], header: str | None) -> tuple[bool, str | None,
                                                                         str | None]:
    """(allowed, REMOTE_USER, AUTH_TYPE) for an ``Authorization`` header."""
    scheme, _, value = (header or "").strip().partition(" ")
    value = value.strip()
    for auth in accepted:
        if isinstance(auth, BasicAuth) and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                continue
            if (hmac.compare_digest(user.encode(), auth.username.encode())
                    and hmac.compare_digest(password.encode(), auth.password.encode())):
                return True, user, "Basic"
        elif (isinstance(auth, BearerAuth) and scheme.lower() == "bearer"
              and hmac.compare_digest(value.encode(), auth.token.encode())):
            return True, auth.username, "Bearer"
    if any(isinstance(auth, NoAuth) for auth in accepted):
        return True, None, None
    return False, None, None


# --------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------


def _peer_common_name(request: web.BaseRequest) -> str | None:
    """The commonName of the verified client certificate, if the client sent one."""
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


# --------------------------------------------------------------------------------------
# Counters
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One request the front answered."""

    method: str
    path: str
    query: str
    #: ``"org/app.git"``, or "" when the path names no repository
    repo: str
    #: ``"git-upload-pack"`` / ``"git-receive-pack"`` for smart requests, else None
    service: str | None
    #: ``"info-refs"`` (ref advertisement), ``"rpc"`` (POST to the service) or ``"other"``
    kind: str
    #: for an rpc: ``"ls-refs"``/``"fetch"`` (v2 command), ``"fetch"`` (v0 wants) or
    #: ``"push"``; None when the body names none (e.g. the flush-only probe git sends
    #: before a large push)
    command: str | None
    #: the version from the ``Git-Protocol`` header (``version=2`` → 2), 0 without it
    protocol: int
    status: int
    user: str | None
    #: request headers as received (``Authorization`` removed)
    headers: Mapping[str, str]
    #: the ``Authorization`` header as received, None without one: which credentials the
    #: client sent (a test's secret, never a real one)
    authorization: str | None = None
    #: raw request body bytes (compressed if the client gzipped it)
    bytes_in: int = 0
    #: response body bytes
    bytes_out: int = 0
    #: pack data bytes in an upload-pack response (sideband channel 1, or a raw pack)
    pack_bytes: int = 0
    #: the backend was killed (client went away, or the request timed out)
    killed: bool = False
    #: the request outlived the server's timeout (answered 504, or cut off mid-response)
    timed_out: bool = False
    stderr: str = ""
    #: the commonName of the client certificate (servers with ``client_ca``), else None
    client_cert: str | None = None


class Counters:
    """What a server was asked for; thread-safe, read from the test's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def reset(self) -> None:
        with self._lock:
            self._records.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def select(self, *, method: str | None = None, path: str | None = None,
               repo: str | None = None, service: str | None = None, kind: str | None = None,
               command: str | None = None, status: int | None = None) -> list[RequestRecord]:
        """The records matching every given field (``repo`` with or without ``.git``)."""
        if repo is not None and not repo.endswith(".git"):
            repo += ".git"
        wanted = {"method": method, "path": path, "repo": repo, "service": service,
                  "kind": kind, "command": command, "status": status}
        return [r for r in self.requests
                if all(v is None or getattr(r, k) == v for k, v in wanted.items())]

    def count(self, *, method: str | None = None, path: str | None = None,
              repo: str | None = None, service: str | None = None, kind: str | None = None,
              command: str | None = None, status: int | None = None) -> int:
        """How many records match (see ``select``)."""
        return len(self.select(method=method, path=path, repo=repo, service=service,
                               kind=kind, command=command, status=status))

    def by_path(self) -> Counter[str]:
        """``"GET /app.git/info/refs"`` → count."""
        return Counter(f"{r.method} {r.path}" for r in self.requests)

    def by_service(self) -> Counter[str]:
        """``"GET info-refs git-upload-pack"`` / ``"POST rpc git-upload-pack"`` → count."""
        return Counter(f"{r.method} {r.kind} {r.service}" for r in self.requests
                       if r.service is not None)

    def upload_pack_posts(self, repo: str | None = None) -> int:
        """POSTs to git-upload-pack (v2 ``ls-refs`` included)."""
        return self.count(method="POST", service="git-upload-pack", repo=repo)

    def packs_sent(self, repo: str | None = None) -> int:
        """upload-pack responses that carried pack data."""
        return sum(1 for r in self.select(service="git-upload-pack", kind="rpc", repo=repo)
                   if r.pack_bytes > 0)

    def pack_bytes(self, repo: str | None = None) -> int:
        """Total pack data bytes sent by upload-pack."""
        return sum(r.pack_bytes for r in self.select(service="git-upload-pack", repo=repo))

    @property
    def killed(self) -> int:
        """Backends killed because the client went away or the request timed out."""
        return sum(1 for r in self.requests if r.killed)


class _PackScanner:
    """Follows the pkt-line framing of an upload-pack response, counting pack bytes.

    Pack data travels on sideband channel 1 (v0 with side-band(-64k), and v2's
    ``packfile`` section); a response without sideband carries a raw ``PACK``.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._raw = False
        self._broken = False
        self.pack_bytes = 0

    def feed(self, data: bytes) -> None:
        if self._raw:
            self.pack_bytes += len(data)
            return
        if self._broken:
            return
        self._buf += data
        pos = 0
        buf = self._buf
        while len(buf) - pos >= 4:
            head = bytes(buf[pos:pos + 4])
            if head == b"PACK":
                self._raw = True
                self.pack_bytes += len(buf) - pos
                pos = len(buf)
                break
            try:
                size = int(head, 16)
            except ValueError:
                self._broken = True
                break
            if size < 4:  # flush, delim, response-end
                pos += 4
                continue
            if len(buf) - pos < size:
                break
            if size > 4 and buf[pos + 4] == 1:
                self.pack_bytes += size - 5
            pos += size
        del buf[:pos]


class _RequestHead:
    """The first bytes of a request body (inflated if gzipped), to name its command."""

    LIMIT = 4096

    def __init__(self, gzipped: bool) -> None:
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
        self.data = bytearray()

    def feed(self, chunk: bytes) -> None:
        room = self.LIMIT - len(self.data)
        if room <= 0:
            return
        if self._inflate is None:
            self.data += chunk[:room]
            return
        try:
            self.data += self._inflate.decompress(chunk, room)
        except zlib.error:
            self.data += b"?"

    def command(self, service: str | None) -> str | None:
        try:
            size = int(self.data[:4], 16)
        except ValueError:
            return None
        if size < 4:  # e.g. the lone flush git sends to probe before a large push
            return None
        if service == "git-receive-pack":
            return "push"
        line = bytes(self.data[4:size]).strip()
        if line.startswith(b"command="):
            return line.removeprefix(b"command=").decode(errors="replace")
        if line.startswith(b"want "):
            return "fetch"
        return None


# --------------------------------------------------------------------------------------
# The HTTP server
# --------------------------------------------------------------------------------------

_SERVICES = ("git-upload-pack", "git-receive-pack")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authenticate", "proxy-authorization"}


def _classify(path: str, query: str) -> tuple[str, str | None, str]:
    """(repo, service, kind) for a request path."""
    if path.endswith("/info/refs"):
        wanted = parse_qs(query).get("service", [None])[0]
        service = wanted if wanted in _SERVICES else None
        return path.removesuffix("/info/refs").strip("/"), service, "info-refs"
    for service in _SERVICES:
        if path.endswith("/" + service):
            return path.removesuffix("/" + service).strip("/"), service, "rpc"
    repo, dot, _ = path.partition(".git/")
    return (repo.strip("/") + ".git" if dot else ""), None, "other"


def _protocol_version(header: str | None) -> int:
    for part in (header or "").split(":"):
        key, _, value = part.partition("=")
        if key.strip() == "version" and value.strip().isdigit():
            return int(value)
    return 0


class _Backend:
    """One running CGI process (the leader of its own process group)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.killed = False

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


class GitServer:
    """``git http-backend`` behind an aiohttp front on 127.0.0.1, in a thread of its own.

    Repositories under ``root`` are served at ``http://127.0.0.1:<port>/<name>.git``, or
    ``https://`` with ``tls``: the certificate (for 127.0.0.1 and localhost) comes from a CA
    made for this server, whose PEM is ``ca_pem``. ``client_ca`` (implies ``tls``) makes
    the TLS handshake require a client certificate signed by that CA; one is ready in
    ``client_cert_pem``/``client_key_pem``, and ``tls_ca.issue`` makes more. ``client_env``
    points the git CLI at them.
    ``auth`` is one scheme or several accepted alike; anything else is answered
    ``401`` with ``WWW-Authenticate: Basic realm="<realm>"`` and an empty body.
    ``allow_push`` lets anonymous clients push (``http.receivepack``); authenticated ones
    always may. ``git_config`` adds server-side config (the defaults allow filters and
    fetching any reachable commit by id, as GitHub and Gitea do). ``timeout`` bounds each
    request; ``backend`` replaces ``git http-backend`` with another CGI program.
    ``trickle`` = (bytes, seconds) sends upload-pack responses that many bytes at a time,
    one piece per that many seconds: a server that keeps a fetch busy without ever
    letting a read time out.
    """

    DEFAULT_CONFIG: Mapping[str, str] = {
        "uploadpack.allowFilter": "true",
        "uploadpack.allowReachableSHA1InWant": "true",
        "uploadpack.allowTipSHA1InWant": "true",
    }

    def __init__(self, root: Path | str, *, auth: Auth | Sequence[Auth] = NoAuth(),
                 realm: str = "fluxd-test", timeout: float = 60.0, allow_push: bool = True,
                 git_config: Mapping[str, str] | None = None,
                 backend: str | Path | None = None, tls: bool = False,
                 client_ca: bool = False, trickle: tuple[int, float] | None = None) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.auth = auth
        self.realm = realm
        self.timeout = timeout
        self.allow_push = allow_push
        self.trickle = trickle
        self.git_config = {**self.DEFAULT_CONFIG, **(git_config or {})}
        self.stats = Counters()
        self.port = 0
        self._backend = str(backend) if backend is not None else http_backend_path()
        self._home: Path | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.ServerRunner | None = None
        self._backends: set[_Backend] = set()
        self._reapers: set[asyncio.Task[None]] = set()
        self.tls = tls or client_ca
        self.client_ca = client_ca
        #: the server's own CA (None without TLS)
        self.tls_ca: CertificateAuthority | None = None
        self._tls_pems: dict[str, bytes] = {}
        self._tls_dir: Path | None = None
        self._ssl: ssl.SSLContext | None = None
        if self.tls:
            self.tls_ca = CertificateAuthority.create()
            cert, key = self.tls_ca.issue("fluxd test git server", hosts=(HOST, "localhost"))
            client_cert, client_key = self.tls_ca.issue("fluxd-test-client", client=True)
            self._tls_pems = {"ca.crt": self.tls_ca.ca_pem, "tls.crt": cert, "tls.key": key,
                              "client.crt": client_cert, "client.key": client_key}

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._home = Path(tempfile.mkdtemp(prefix="fluxd-gitserver-home-"))
        if self.tls:
            self._ssl = self._server_context()
        self._thread = threading.Thread(target=self._main, name="gitserver", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("git server did not start in 30 s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def down(self) -> None:
        """Close the listener and every connection; in-flight backends are killed."""
        self._call(self._listen_stop())

    def up(self) -> None:
        """Listen again, on the same port."""
        self._call(self._listen(self.port))

    @property
    def is_up(self) -> bool:
        return self._runner is not None

    @property
    def running_backends(self) -> int:
        """git http-backend processes running right now."""
        return len(self._backends)

    # -- addresses and repositories ------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}"

    def repo_url(self, name: str, *, username: str | None = None,
                 password: str | None = None) -> str:
        """``http[s]://[user[:password]@]127.0.0.1:<port>/<name>.git``."""
        creds = ""
        if username is not None:
            creds = quote(username, safe="")
            if password is not None:
                creds += ":" + quote(password, safe="")
            creds += "@"
        return f"{self.scheme}://{creds}{HOST}:{self.port}/{repo_dir('', name).as_posix()}"

    # -- TLS ---------------------------------------------------------------------------------

    def _pem(self, name: str) -> bytes:
        if not self.tls:
            raise RuntimeError("this git server runs without TLS: GitServer(..., tls=True)")
        return self._tls_pems[name]

    @property
    def ca_pem(self) -> bytes:
        """The PEM of the CA that signed the server's certificate (a Secret's ``ca.crt``)."""
        return self._pem("ca.crt")

    @property
    def client_cert_pem(self) -> bytes:
        """A client certificate signed by ``ca_pem`` (a Secret's ``tls.crt``); the server
        demands one like it with ``client_ca``."""
        return self._pem("client.crt")

    @property
    def client_key_pem(self) -> bytes:
        """The key of ``client_cert_pem`` (a Secret's ``tls.key``)."""
        return self._pem("client.key")

    def client_env(self) -> dict[str, str]:
        """Extra environment for ``git(...)`` so it trusts this server (and, with
        ``client_ca``, presents the client certificate); empty without TLS."""
        if not self.tls:
            return {}
        files = self._tls_files()
        env = {"GIT_SSL_CAINFO": str(files["ca.crt"])}
        if self.client_ca:
            env.update(GIT_SSL_CERT=str(files["client.crt"]), GIT_SSL_KEY=str(files["client.key"]))
        return env

    def _tls_files(self) -> dict[str, Path]:
        """The PEMs as files (ssl and the git CLI read files), kept until ``stop``."""
        if self._tls_dir is None:
            self._tls_dir = Path(tempfile.mkdtemp(prefix="fluxd-gitserver-tls-"))
        files = {}
        for name, data in self._tls_pems.items():
            path = self._tls_dir / name
            if not path.exists():
                path.write_bytes(data)
                path.chmod(0o600)
            files[name] = path
        return files

    def _server_context(self) -> ssl.SSLContext:
        files = self._tls_files()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(files["tls.crt"], files["tls.key"])
        if self.client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=self.ca_pem.decode())
        return context

    def make_repo(self, name: str, files: Mapping[str, FileValue], *, branch: str = "main",
                  message: str = "initial commit", date: int | None = None) -> Repo:
        return make_repo(self.root, name, files, branch=branch, message=message, date=date)

    def make_large_repo(self, name: str, *, files: int = 5000, branch: str = "main") -> Repo:
        return make_large_repo(self.root, name, files=files, branch=branch)

    # -- the server thread -----------------------------------------------------------------

    def _call(self, coro: Any) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("server not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.set_exception_handler(_quiet_handshakes)
        self._stop = asyncio.Event()
        try:
            await self._listen(0)
            self._ready.set()
            await self._stop.wait()
        finally:
            await self._listen_stop()

    async def _listen(self, port: int) -> None:
        if self._runner is not None:
            return
        server = web.Server(self._handle, handler_cancellation=True, auto_decompress=False,
                            access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, HOST, port, reuse_address=True, ssl_context=self._ssl)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def _listen_stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        for backend in list(self._backends):
            backend.kill()
        if self._reapers:
            await asyncio.wait(list(self._reapers), timeout=10)

    # -- one request -------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path, query = request.path, request.query_string
        repo, service, kind = _classify(path, query)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        accepted = self.auth if isinstance(self.auth, Sequence) else (self.auth,)
        allowed, user, auth_type = _authenticate(accepted, request.headers.get("Authorization"))
        record = RequestRecord(
            method=request.method, path=path, query=query, repo=repo, service=service,
            kind=kind, command=None, protocol=_protocol_version(request.headers.get(
                "Git-Protocol")), status=0, user=user, headers=headers,
            authorization=request.headers.get("Authorization"),
            client_cert=_peer_common_name(request) if self.client_ca else None)
        if not allowed:
            self.stats.add(replace(record, status=401))
            return web.Response(status=401, headers={
                "WWW-Authenticate": f'Basic realm="{self.realm}"'})
        return await self._cgi(request, record, auth_type)

    def _cgi_env(self, request: web.BaseRequest, user: str | None,
                 auth_type: str | None) -> dict[str, str]:
        assert self._home is not None
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self._home),
            "XDG_CONFIG_HOME": str(self._home / ".config"),
            "LANG": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_SOFTWARE": "fluxd-test-gitserver",
            "SERVER_PROTOCOL": f"HTTP/{request.version.major}.{request.version.minor}",
            "SERVER_NAME": HOST,
            "SERVER_PORT": str(self.port),
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": request.path,
            "QUERY_STRING": request.query_string,
            "REMOTE_ADDR": request.remote or HOST,
        }
        if self.tls:
            env["HTTPS"] = "on"
        config = dict(self.git_config)
        if self.allow_push:
            config.setdefault("http.receivepack", "true")
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (key, value) in enumerate(config.items()):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        if user is not None and auth_type is not None:
            env["REMOTE_USER"] = user
            env["AUTH_TYPE"] = auth_type
        if "Content-Type" in request.headers:
            env["CONTENT_TYPE"] = request.headers["Content-Type"]
        length = request.headers.get("Content-Length")
        if length is not None and "Transfer-Encoding" not in request.headers:
            env["CONTENT_LENGTH"] = length
        if "Git-Protocol" in request.headers:
            env["GIT_PROTOCOL"] = request.headers["Git-Protocol"]
        for name, value in request.headers.items():
            if name.lower() in ("authorization", "proxy-authorization", "content-type",
                                "content-length"):
                continue
            key = "HTTP_" + name.upper().replace("-", "_")
            env[key] = f"{env[key]}, {value}" if key in env else value
        return env

    async def _cgi(self, request: web.BaseRequest, record: RequestRecord,
                   auth_type: str | None) -> web.StreamResponse:
        env = self._cgi_env(request, record.user, auth_type)
        proc = await asyncio.create_subprocess_exec(
            self._backend, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, cwd=self.root, start_new_session=True)
        backend = _Backend(proc)
        self._backends.add(backend)
        head = _RequestHead(request.headers.get("Content-Encoding", "").lower() == "gzip")
        scanner = _PackScanner() if record.service == "git-upload-pack" else None
        counts = {"in": 0, "out": 0}
        stderr = bytearray()
        resp: web.StreamResponse | None = None
        pumps: list[asyncio.Task[None]] = []
        recorded = False
        trickle = self.trickle if record.service == "git-upload-pack" else None

        async def send(data: bytes) -> None:
            assert resp is not None
            if trickle is None:
                await resp.write(data)
                return
            size, pause = trickle
            for start in range(0, len(data), size):
                await resp.write(data[start:start + size])
                await asyncio.sleep(pause)

        def finish(status: int) -> None:
            """Count the request (once), before the client can see its response end."""
            nonlocal recorded
            if recorded:
                return
            recorded = True
            self._backends.discard(backend)
            self.stats.add(replace(
                record, status=status,
                command=head.command(record.service) if record.kind == "rpc" else None,
                bytes_in=counts["in"], bytes_out=counts["out"],
                pack_bytes=scanner.pack_bytes if scanner is not None else 0,
                killed=backend.killed, stderr=stderr.decode(errors="replace")))

        async def feed() -> None:
            assert proc.stdin is not None
            try:
                if request.can_read_body:
                    if request.headers.get("Expect", "").lower() == "100-continue":
                        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    async for chunk in request.content.iter_chunked(_CHUNK):
                        counts["in"] += len(chunk)
                        head.feed(chunk)
                        proc.stdin.write(chunk)
                        await proc.stdin.drain()
                proc.stdin.close()
                await proc.stdin.wait_closed()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the backend stopped reading: its response says why

        async def drain_stderr() -> None:
            assert proc.stderr is not None
            while chunk := await proc.stderr.read(_CHUNK):
                stderr.extend(chunk[: max(0, 16384 - len(stderr))])

        try:
            async with asyncio.timeout(self.timeout):
                pumps = [asyncio.create_task(feed()), asyncio.create_task(drain_stderr())]
                assert proc.stdout is not None
                status, reason, out_headers = await read_cgi_headers(proc.stdout)
                resp = web.StreamResponse(status=status, reason=reason, headers=out_headers)
                await resp.prepare(request)
                # one chunk is held back so the request is counted before the client
                # has the whole response, even when it need not wait for the chunked end
                held = b""
                while chunk := await proc.stdout.read(_CHUNK):
                    counts["out"] += len(chunk)
                    if scanner is not None:
                        scanner.feed(chunk)
                    if held:
                        await send(held)
                    held = chunk
                await proc.wait()
                await asyncio.gather(*pumps)
                finish(resp.status)
                if held:
                    await send(held)
                await resp.write_eof()
        except TimeoutError:
            record = replace(record, timed_out=True)
            backend.kill()
            if resp is None:
                resp = web.Response(status=504, text="git http-backend timed out\n")
            elif request.transport is not None:
                request.transport.close()  # headers went out: cut the connection
        except BadCgiResponse as exc:
            resp = web.Response(status=502, text=f"bad CGI response: {exc}\n")
        finally:
            backend.kill()  # a no-op once it exited
            for pump in pumps:
                pump.cancel()

            async def reap() -> None:
                # runs to the end even when the handler is cancelled (client gone)
                await asyncio.gather(*pumps, return_exceptions=True)
                if proc.stdin is not None:
                    proc.stdin.close()
                if proc.stdout is not None:
                    # output left unread (a client gone mid-response) keeps the pipe
                    # paused short of its end, and wait() waits for the pipes too
                    while await proc.stdout.read(_CHUNK):
                        pass
                await proc.wait()
                finish(resp.status if resp is not None else 499)

            reaper = asyncio.create_task(reap())
            self._reapers.add(reaper)
            reaper.add_done_callback(self._reapers.discard)
            await asyncio.shield(reaper)
        return resp


def _quiet_handshakes(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Refused TLS handshakes (an unknown CA, a missing client certificate) are what TLS
    tests provoke: asyncio's debug mode would log each one; everything else is logged."""
    exc = context.get("exception")
    if isinstance(exc, ssl.SSLError) or (
            isinstance(exc, ConnectionError)
            and "transport creation" in str(context.get("message", ""))):
        return
    loop.default_exception_handler(context)


class BadCgiResponse(Exception):
    """A CGI program's output did not start with a valid header block."""


async def read_cgi_headers(stdout: asyncio.StreamReader) -> tuple[int, str | None,
                                                                    CIMultiDict[str]]:
    """Parse a CGI response's header block: ``Status:``, ``Location:`` and the rest."""
    headers: CIMultiDict[str] = CIMultiDict()
    status, reason = 200, None
    total = 0
    while True:
        try:
            line = await stdout.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            raise BadCgiResponse("the backend exited before ending its headers") from exc
        except asyncio.LimitOverrunError as exc:
            raise BadCgiResponse("header line too long") from exc
        total += len(line)
        if total > 65536:
            raise BadCgiResponse("headers too long")
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            break
        name, sep, value = text.partition(":")
        if not sep:
            raise BadCgiResponse(f"malformed header line {text!r}")
        name, value = name.strip(), value.strip()
        if name.lower() == "status":
            code, _, why = value.partition(" ")
            if not code.isdigit():
                raise BadCgiResponse(f"bad Status {value!r}")
            status, reason = int(code), why or None
        elif name.lower() not in _HOP_BY_HOP:
            headers.add(name, value)
    if "Location" in headers and status == 200:
        status = 302
    return status, reason, headers


# --------------------------------------------------------------------------------------
# SSH
# --------------------------------------------------------------------------------------

SSHD = "/usr/sbin/sshd"
SSHD_PACKAGE = "openssh-server"


class SshdUnavailable(RuntimeError):
    """sshd (or its runtime directory) is missing; the message says what to install."""


def ensure_sshd() -> str:
    """The path of a usable ``sshd``, or ``SshdUnavailable`` naming the package to install.

    Needs Debian's ``openssh-server`` (``apt-get install -y openssh-server``), which brings
    ``/usr/sbin/sshd`` and the ``sshd`` privilege-separation user, and ``openssh-client``
    for ``ssh``/``ssh-keygen``. Running as root, sshd also needs ``/run/sshd`` (made by the
    service unit normally): created here when missing.
    """
    if not os.access(SSHD, os.X_OK):
        raise SshdUnavailable(
            f"{SSHD} is missing: install Debian's {SSHD_PACKAGE} package "
            f"(apt-get install -y {SSHD_PACKAGE})")
    for tool_name in ("ssh", "ssh-keygen"):
        if shutil.which(tool_name) is None:
            raise SshdUnavailable(f"{tool_name} is missing: apt-get install -y openssh-client")
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    return SSHD


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class SshGitServer:
    """sshd on 127.0.0.1 serving ``root`` to the current user, keys in ``workdir``.

    Clients authenticate with ``identity`` and verify the host with ``known_hosts``; the
    git CLI does both through ``client_env()`` (``GIT_SSH_COMMAND``). Protocol v2 works:
    sshd accepts ``GIT_PROTOCOL``.
    """

    root: Path
    workdir: Path
    user: str = field(default_factory=lambda: pwd.getpwuid(os.geteuid()).pw_name)
    port: int = 0
    identity: Path = field(init=False)
    known_hosts: Path = field(init=False)
    log: Path = field(init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.workdir = Path(self.workdir).resolve()
        self.identity = self.workdir / "id_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        self.log = self.workdir / "sshd.log"

    def start(self) -> Self:
        sshd = ensure_sshd()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        host_key = self.workdir / "ssh_host_ed25519_key"
        for key in (host_key, self.identity):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                                "fluxd-test", "-f", str(key)], check=True, timeout=30,
                               capture_output=True)
            key.chmod(0o600)
        (self.workdir / "authorized_keys").write_text(
            Path(f"{self.identity}.pub").read_text())
        host_pub = Path(f"{host_key}.pub").read_text().split()
        last_error = ""
        for _attempt in range(5):
            self.port = _free_port()
            self.known_hosts.write_text(f"[{HOST}]:{self.port} {host_pub[0]} {host_pub[1]}\n")
            config = self.workdir / "sshd_config"
            config.write_text(_SSHD_CONFIG.format(
                port=self.port, host=HOST, host_key=host_key, user=self.user,
                keys=self.workdir / "authorized_keys"))
            with self.log.open("wb") as log:
                self._proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)],
                                              stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT)
            if _wait_for_banner(self.port, self._proc, 10):
                return self
            self._terminate()
            last_error = self.log.read_text(errors="replace")
        raise RuntimeError(f"sshd did not start:\n{last_error}")

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def stop(self) -> None:
        self._terminate()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def repo_url(self, name: str) -> str:
        """``ssh://<user>@127.0.0.1:<port>/<root>/<name>.git``."""
        return f"ssh://{self.user}@{HOST}:{self.port}{repo_dir(self.root, name).as_posix()}"

    @property
    def ssh_command(self) -> str:
        """An ``ssh`` command line for ``GIT_SSH_COMMAND``: this key, this host key only."""
        return (f"ssh -F /dev/null -i {self.identity} -o IdentitiesOnly=yes "
                f"-o IdentityAgent=none -o UserKnownHostsFile={self.known_hosts} "
                "-o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=10 "
                "-o LogLevel=ERROR")

    def client_env(self) -> dict[str, str]:
        """Extra environment for ``git(...)`` so it reaches this server."""
        return {"GIT_SSH_COMMAND": self.ssh_command}

    def make_repo(self, name: str, files: Mapping[str, FileValue], *, branch: str = "main",
                  message: str = "initial commit", date: int | None = None) -> Repo:
        return make_repo(self.root, name, files, branch=branch, message=message, date=date)


def _wait_for_banner(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=2) as sock:
                if sock.recv(64).startswith(b"SSH-2.0"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


_SSHD_CONFIG = """\
Port {port}
ListenAddress {host}
HostKey {host_key}
PidFile none
AuthorizedKeysFile {keys}
StrictModes no
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
AcceptEnv GIT_PROTOCOL
SetEnv GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
AllowTcpForwarding no
X11Forwarding no
PermitTTY no
MaxStartups 64
LogLevel ERROR
"""
