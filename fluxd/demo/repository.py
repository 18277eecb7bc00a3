"""The demo's Git repository: a fresh working copy of ``examples/gitops``, made with the git CLI.

Everything here blocks (files, the git CLI) and is meant to run in a worker thread. Every
git invocation has a timeout, never prompts, and skips the user's commit hooks and signing
for the demo's own commits; the user's own ``git commit`` in the repository works as usual.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: the example repository in a fluxd checkout
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gitops"
BRANCH = "main"
#: the directory the root Kustomization applies: the cluster's Flux objects
CLUSTER_PATH = "./clusters/eu-west/flux-system"
#: the namespace the example's workloads land in
APP_NAMESPACE = "podinfo"
#: the example's HelmRelease, and the Helm release it makes in ``APP_NAMESPACE``
APP_RELEASE = "cache"
#: the file and value the scripted commit of ``fluxd demo --once`` changes: a value of the
#: HelmRelease ``cache``, so the commit is a ``helm upgrade``
SCRIPTED_FILE = "clusters/eu-west/apps/cache.yaml"
SCRIPTED_KEY = "maxMemory"
SCRIPTED_VALUE = "128mb"

#: how long one git command may take
GIT_TIMEOUT = 30.0
#: marks a state directory as the demo's, so a restart may clear it
MARKER = ".fluxd-demo"
#: the identity of the demo's commits when the user has none configured
IDENTITY = {"user.name": "fluxd demo", "user.email": "demo@fluxd.invalid"}


class DemoError(Exception):
    """The demo cannot go on; the message says why and what to do."""


def example_dir(path: Path = EXAMPLE) -> Path:
    """The example repository, or a clear error when fluxd runs without its checkout."""
    if not (path / CLUSTER_PATH).is_dir():
        raise DemoError(f"the demo's example repository is missing ({path}): run `fluxd demo` "
                        "from a fluxd checkout (`make demo`); an installed package does not "
                        "carry examples/")
    return path


def prepare_state(state: Path) -> None:
    """Make ``state`` the demo's own, empty directory: clear it when an earlier demo made it,
    refuse when it holds anything else."""
    if state.exists() and any(state.iterdir()) and not (state / MARKER).exists():
        raise DemoError(f"{state} exists and was not made by `fluxd demo`; choose another "
                        "place with --kubeconfig (the demo keeps its state next to it)")
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True)
    (state / MARKER).write_text("made by `fluxd demo`; removed at its next start\n")


def revision(sha: str, branch: str = BRANCH) -> str:
    """Flux's revision string of a commit on a branch: ``main@sha1:<hex>``."""
    return f"{branch}@sha1:{sha}"


def set_value(text: str, key: str, value: str) -> str:
    """``text`` (YAML) with the quoted scalar of ``key`` replaced by ``value``."""
    pattern = re.compile(rf'^(\s*{re.escape(key)}:\s*)"[^"\n]*"', re.M)
    new, count = pattern.subn(lambda m: f'{m.group(1)}"{value}"', text)
    if count != 1:
        raise DemoError(f"expected one {key}: \"…\" line, found {count}")
    return new


@dataclass(frozen=True)
class WorkingRepo:
    """A non-bare repository whose ``main`` branch the demo serves and follows."""

    path: Path
    git_binary: str

    def git(self, *args: str) -> str:
        """Run git in the repository; its stripped stdout, or DemoError with stderr."""
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        try:
            done = subprocess.run([self.git_binary, "-C", str(self.path), *args], env=env,
                                  capture_output=True, text=True, timeout=GIT_TIMEOUT,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise DemoError(f"git {args[0]} took longer than {GIT_TIMEOUT:.0f}s") from None
        if done.returncode != 0:
            raise DemoError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def head(self) -> str:
        """The commit the branch points at now."""
        return self.git("rev-parse", "--verify", f"refs/heads/{BRANCH}^{{commit}}")

    def commit_all(self, message: str) -> str:
        """Commit every change in the working tree; the new commit's id."""
        self.git("add", "--all")
        self.git("-c", "commit.gpgsign=false", "commit", "--quiet", "--no-verify",
                 "-m", message)
        return self.head()

    def commit_scripted_change(self) -> str:
        """The commit ``--once`` makes: a new value for the cache's HelmRelease."""
        path = self.path / SCRIPTED_FILE
        path.write_text(set_value(path.read_text(), SCRIPTED_KEY, SCRIPTED_VALUE))
        return self.commit_all(f"apps: cache {SCRIPTED_KEY} {SCRIPTED_VALUE}")


def create(example: Path, dest: Path, *, git_binary: str) -> WorkingRepo:
    """A new repository at ``dest`` holding a copy of ``example`` in one commit on ``main``."""
    shutil.copytree(example, dest)
    repo = WorkingRepo(dest, git_binary)
    repo.git("init", "--quiet", f"--initial-branch={BRANCH}")
    for key, value in IDENTITY.items():
        try:
            repo.git("config", "--get", key)
        except DemoError:  # not configured anywhere: a local one, so commits work
            repo.git("config", key, value)
    repo.commit_all(f"{example.name}: the example cluster eu-west")
    return repo
