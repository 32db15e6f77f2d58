"""API keys without servers: the key file's format and its refusals, minting and constant-time verification,
the policy's decisions and words, the key ring's reloads (rotation, removal, a half-written file), the relay key
file, and ``mmsearch keys create``."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mmsearch.core.access.keyring import KeyRing, SecretFile
from mmsearch.core.access.keys import KeyFileError, mint, parse_key_file, parse_token, verify
from mmsearch.core.access.policy import Refusal, anonymous_principal, authenticate, authorize, credential


def test_a_minted_key_verifies_and_its_line_holds_only_the_hash():
    key, line = mint(["search", "feedback"], ["t2t"], rate=5, name="app")
    key_id, secret = parse_token(key)
    record = json.loads(line)
    assert record["id"] == key_id and secret not in line and record["hash"].startswith("sha256:")
    assert record["scopes"] == ["feedback", "search"] and record["scenes"] == ["t2t"]
    assert (record["rate"], record["burst"]) == (5.0, 10)
    keys = parse_key_file(line)
    principal = verify(key, keys)
    assert principal.key_id == key_id and principal.may("search") and not principal.may("write")
    assert principal.may_touch("t2t") and not principal.may_touch("t2i")
    assert verify(key[:-1] + ("A" if key[-1] != "A" else "B"), keys) is None  # one character off
    assert verify(f"mms_{'0' * 12}_{secret}", keys) is None  # unknown id
    assert verify("Bearer " + key, keys) is None and verify("", keys) is None


@pytest.mark.parametrize("line, words", [
    ("not json", "line 2: not a JSON object"),
    ('["a"]', "line 2: not a JSON object"),
    ('{"id": "XYZ", "hash": "sha256:' + "0" * 64 + '", "scopes": ["search"]}', "'id' must be 12 lowercase hex"),
    ('{"id": "0123456789ab", "hash": "mms_secret", "scopes": ["search"]}', "'hash' must be 'sha256:'"),
    ('{"id": "0123456789ab", "hash": "sha256:' + "0" * 64 + '", "scopes": ["serch"]}', "unknown scope 'serch'"),
    ('{"id": "0123456789ab", "hash": "sha256:' + "0" * 64 + '", "scopes": []}', "at least one scope"),
    ('{"id": "0123456789ab", "hash": "sha256:' + "0" * 64 + '", "scopes": "search"}', "'scopes' must be a list"),
    ('{"id": "0123456789ab", "hash": "sha256:' + "0" * 64 + '", "scopes": ["search"], "scenes": []}',
     "empty scene list"),
    ('{"id": "0123456789ab", "hash": "sha256:' + "0" * 64 + '", "scopes": ["search"], "scenes": ["a b"]}',
     "'a b' is not a scene name"),
    ('{"id": "0123456789ab", "hash": "sha256:' + "0" * 64 + '", "scopes": ["search"], "rate": -1}',
     "'rate' must be a number"),
    ('{"id": "0123456789ab", "hash": "sha256:' + "0" * 64 + '", "scopes": ["search"], "burst": 3}',
     "'burst' needs a 'rate'"),
    ('{"id": "0123456789ab", "hash": "sha256:' + "0" * 64 + '", "scopes": ["search"], "secret": "x"}',
     "unknown field 'secret'"),
])
def test_a_bad_line_is_refused_naming_the_line_and_field(line, words):
    first = mint(["search"])[1]
    with pytest.raises(KeyFileError) as err:
        parse_key_file(f"{first}\n{line}\n", "keys.jsonl")
    assert "keys.jsonl line 2" in str(err.value) and words in str(err.value)


def test_comments_blank_lines_and_duplicate_ids():
    line = mint(["admin"])[1]
    assert len(parse_key_file(f"# the admins\n\n{line}\n")) == 1
    with pytest.raises(KeyFileError, match="appears twice"):
        parse_key_file(f"{line}\n{line}\n")


def test_the_policy_says_what_is_missing():
    key, line = mint(["search"], ["t2t"])
    keys = parse_key_file(line)
    with pytest.raises(Refusal) as err:
        authenticate(None, keys, None)
    assert err.value.kind == "unauthenticated" and "Authorization: Bearer <key>" in err.value.message
    anonymous = anonymous_principal("t2t, images")
    assert authenticate(None, keys, anonymous) is anonymous
    assert anonymous.scopes == {"search", "feedback"} and anonymous.scenes == {"t2t", "images"}
    assert anonymous_principal("*").scenes is None and anonymous_principal(" ") is None
    principal = authenticate(credential(f"bearer {key}"), keys, None)
    authorize(principal, "search", "t2t")
    with pytest.raises(Refusal, match="lacks the scope 'write' \\(has: search\\)") as err:
        authorize(principal, "write", "t2t")
    assert err.value.kind == "forbidden"
    with pytest.raises(Refusal, match="may not touch scene 't2i' \\(allowed scenes: t2t\\)"):
        authorize(principal, "search", "t2i")
    with pytest.raises(Refusal, match="anonymous callers may not touch scene 't2i'"):
        authorize(anonymous, "search", "t2i")
    with pytest.raises(Refusal, match="must be `Bearer <key>`"):
        credential("Basic dXNlcjpwYXNz")
    assert credential(None, " key ") == "key" and credential(None, None) is None
    with pytest.raises(Refusal) as err:
        authenticate("garbage", keys, anonymous)  # a bad key is refused even when anonymous access is on
    assert "garbage" not in err.value.message


def test_the_key_ring_follows_its_file(tmp_path):
    path = tmp_path / "keys.jsonl"
    old_key, old_line = mint(["search"], name="app")
    new_key, new_line = mint(["search"], name="app")
    path.write_text(old_line + "\n")
    ring = KeyRing(path, check_seconds=0)
    assert verify(old_key, ring.keys()) and ring.reloads == 1
    path.write_text(f"{old_line}\n{new_line}\n")  # rotation: both valid together
    keys = ring.keys()
    assert verify(old_key, keys) and verify(new_key, keys) and ring.reloads == 2
    path.write_text(f"{new_line}\n{{half written\n")
    keys = ring.keys()  # a file that does not parse keeps the keys loaded before
    assert verify(old_key, keys) and "line 2" in ring.last_error and ring.reloads == 2
    tmp = tmp_path / "swap"
    tmp.write_text(new_line + "\n")
    os.replace(tmp, path)  # as a Secret volume swaps its files
    keys = ring.keys()
    assert verify(new_key, keys) and not verify(old_key, keys) and ring.last_error is None
    path.unlink()
    assert verify(new_key, ring.keys())  # a missing file on reload: the old keys stay
    with pytest.raises(KeyFileError, match="cannot read the API key file .*MMSEARCH_API_KEYS_FILE"):
        KeyRing(path)
    assert KeyRing(None).keys() == {} and not KeyRing(None).enabled


def test_the_key_ring_looks_at_most_once_per_period(tmp_path):
    path = tmp_path / "keys.jsonl"
    key, line = mint(["search"])
    path.write_text(line + "\n")
    now = [0.0]
    ring = KeyRing(path, check_seconds=1.0, clock=lambda: now[0])
    path.write_text("")
    assert verify(key, ring.keys())  # not looked at yet
    now[0] = 1.0
    assert ring.keys() == {}


def test_the_relay_key_file_is_reread_when_it_changes(tmp_path):
    path = tmp_path / "serving-key"
    path.write_text("first\n")
    secret = SecretFile(path, what="the relay key", check_seconds=0)
    assert secret.value() == "first"
    path.write_text("second\n")
    assert secret.value() == "second"
    path.write_text("")
    assert secret.value() == "second"  # an empty file on reload keeps the old value
    with pytest.raises(KeyFileError, match="is empty"):
        SecretFile(path, what="the relay key")


def test_keys_create_prints_the_key_then_its_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mmsearch.cli", "keys", "create", "--scopes", "search,feedback",
                          "--scenes", "t2t", "--rate", "3", "--name", "mobile"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    key, line = run.stdout.splitlines()
    assert "shown once" in run.stderr
    (tmp_path / "keys.jsonl").write_text(line + "\n")
    principal = verify(key, KeyRing(tmp_path / "keys.jsonl").keys())
    assert principal.name == "mobile" and principal.rate == 3.0 and principal.scenes == {"t2t"}
    bad = subprocess.run([sys.executable, "-m", "mmsearch.cli", "keys", "create", "--scopes", "search,serch"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown scope 'serch'; scopes are search, feedback, write, admin, relay" in bad.stderr
