import pytest

from sleeptime.db import InvalidInput


def test_keys_are_stored_hashed(store, sql):
    assert not store.has_api_keys()
    key = store.create_api_key("ci")
    assert key.startswith("st_") and len(key) > 40
    # the plaintext appears nowhere in the table, only its sha256 and a display prefix
    for row in sql("SELECT * FROM api_keys"):
        assert all(key not in str(value) for value in row)
    [info] = store.list_api_keys()
    assert (info.name, info.prefix, info.revoked_at) == ("ci", key[:10], None)
    assert store.has_api_keys()


def test_verify_and_revoke(store):
    ci, ops = store.create_api_key("ci"), store.create_api_key("ops")
    assert ci != ops
    assert store.verify_api_key(ci) == "ci" and store.verify_api_key(ops) == "ops"
    for wrong in [ci[:-1], ci + "x", "", "st_", None, ops.upper(), "x" * 10_000]:
        assert store.verify_api_key(wrong) is None
    store.revoke_api_key("ci")
    store.revoke_api_key("ci")
    assert store.verify_api_key(ci) is None and store.verify_api_key(ops) == "ops"
    assert store.list_api_keys()[0].revoked_at is not None
    store.revoke_api_key("ops")
    # every key revoked: the API stays closed (invariant 9)
    assert store.has_api_keys()


def test_bad_key_names(store):
    store.create_api_key("ci")
    with pytest.raises(InvalidInput, match="already exists"):
        store.create_api_key("ci")
    with pytest.raises(InvalidInput, match="invalid API key name"):
        store.create_api_key("has space")
    with pytest.raises(InvalidInput, match="no API key named"):
        store.revoke_api_key("ghost")
