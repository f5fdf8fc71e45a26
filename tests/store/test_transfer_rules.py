"""The store's export and import rules (store/transfer.py), on every store: rows go in and come
back out as they were (flags as booleans), new ids follow the imported ones (a user's also
those of removed users), an import refuses a store holding anything and marks nothing then,
and one run again on a store an interrupted import marked starts over."""

from __future__ import annotations

import pytest

from threadsvc.errors import Conflict
from threadsvc.store.base import Store
from threadsvc.store.transfer import TABLES_BY_NAME

pytestmark = pytest.mark.anyio

USERS = TABLES_BY_NAME["users"]
GROUPS = TABLES_BY_NAME["groups"]
MEMBERSHIPS = TABLES_BY_NAME["memberships"]
SETTINGS = TABLES_BY_NAME["server_settings"]


def user(id: int, name: str, **changes: object) -> dict[str, object]:
    return {"id": id, "username": name, "password_hash": f"hash-{name}", "is_admin": False,
            "created": 1000 + id, "disabled": False, "credential_version": 0, **changes}


async def test_rows_come_back_as_they_went_in_and_new_ids_follow(store: Store) -> None:
    assert await store.begin_import() is False
    rows = [user(3, "ann", is_admin=True), user(5, "bob", disabled=True, credential_version=4)]
    await store.import_rows(USERS, rows)
    await store.import_rows(GROUPS, [{"id": 240, "name": "dev"}])
    await store.import_rows(MEMBERSHIPS, [{"group_id": 240, "user_id": 3, "role": 3}])
    await store.finish_import("local", user_id_high=9)  # users up to 9 were removed at the source

    assert [dict(r) for r in await store.export_page(USERS, USERS.first, 10)] == rows
    assert [dict(r) for r in await store.export_page(USERS, (3,), 10)] == rows[1:]  # a page on
    assert await store.user_id_high() == 9
    assert (await store.create_user("cat", None, False)).id == 10  # never a removed user's id
    assert (await store.create_group("new")).id == 241
    found = await store.get_user("ann")
    assert found is not None and found[0].is_admin and found[1] == "hash-ann"
    assert await store.get_user("bob") is None  # disabled: as the source had it
    settings = {r["key"]: r["value"] for r in await store.export_page(SETTINGS, ("",), 10)}
    assert settings["files"] == "local"  # recorded only at the end


async def test_an_import_refuses_a_store_that_holds_anything_and_marks_nothing(
    store: Store,
) -> None:
    await store.create_user("someone", None, False)
    for _ in range(2):  # the second time too: the first left no mark to start over from
        with pytest.raises(Conflict, match="not empty"):
            await store.begin_import()
    assert await store.get_user("someone") is not None
    assert await store.get_or_put_setting("files", "local") == "local"


async def test_an_import_run_again_starts_over(store: Store) -> None:
    await store.begin_import()
    await store.import_rows(USERS, [user(1, "ann")])
    await store.import_rows(GROUPS, [{"id": 240, "name": "dev"}])
    # interrupted here: marked, so not taken for an empty store, nor for a full one
    assert await store.get_or_put_setting("files", "local") == "importing"
    assert await store.begin_import() is True
    assert await store.export_page(USERS, USERS.first, 10) == []
    assert await store.export_page(GROUPS, GROUPS.first, 10) == []
    await store.import_rows(USERS, [user(1, "ann")])
    await store.finish_import("local", user_id_high=1)
    assert await store.get_user("ann") is not None
