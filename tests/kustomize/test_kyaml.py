"""YAML is read as kustomize reads it, or refused."""

from __future__ import annotations

import pytest

from fluxd.kustomize.kyaml import Unsupported, load_documents, load_kustomization


def test_a_kustomization_is_typed_as_go_yaml_v2_types_it() -> None:
    loaded = load_kustomization(b"namePrefix: yes\nnameSuffix: '-x'\nreplicas:\n"
                                b"- {name: a, count: 0x1F}\ncommonLabels: {a: on}\n")
    assert loaded == {"namePrefix": True, "nameSuffix": "-x",
                      "replicas": [{"name": "a", "count": 31}], "commonLabels": {"a": True}}
    assert load_kustomization(b"") is None
    assert load_kustomization(b"# only a comment\n") is None


def test_resources_are_typed_as_go_yaml_v3_types_them() -> None:
    assert load_documents(b"a: yes\nb: 0o17\nc: 1.0\n---\n---\nd: ~\n") == [
        {"a": "yes", "b": 15, "c": 1}, {"d": None}]


@pytest.mark.parametrize("text", [
    b"a: 1\na: 2\n",
    b"a: [unclosed\n",
    b"a: &x {b: 1}\nc:\n  <<: *x\n",
    b"a: !!binary aGVsbG8=\n",
    b"a: 2024-01-01\n",
    b"a: 1\n---\nb: 2\n",
])
def test_what_kustomize_may_read_otherwise_is_refused(text: bytes) -> None:
    with pytest.raises(Unsupported):
        load_kustomization(text)
    if not text.startswith(b"a: 1\n---"):
        with pytest.raises(Unsupported):
            load_documents(text)
