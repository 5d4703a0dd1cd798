"""The merge decisions of one uploaded change, as pure functions over values."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offmaps.schemas import EditingCapabilities
from offmaps.schemas.changeset import (
    AttachmentRef,
    Change,
    ChangeStatus,
    ConflictPolicy,
    SyncChangeKind,
)
from offmaps.sync import timestamp_from_ms
from offmaps.sync.decide import (
    AddAttachment,
    Apply,
    Concurrent,
    ConflictKind,
    DeleteAttachment,
    DeletedRow,
    DeleteRow,
    FieldConflict,
    InsertRow,
    LayerRules,
    Park,
    Reject,
    ServerRow,
    UpdateRow,
    admit,
    base_values,
    decide_attachment,
    decide_existing,
    decide_gone,
    decide_insert,
    delete_against_update,
    edited_values,
    merge_update,
    settle_update,
)

NODE = "ab" * 16
OTHER = "cd" * 16
GID = uuid.UUID(int=7)
EARLY, LATE = 1_700_000_000_000, 1_800_000_000_000
ALL = EditingCapabilities(create=True, update=True, delete=True)
RULES = LayerRules(ALL, attachments_enabled=True, policy=ConflictPolicy.MANUAL)
SETTLING = [p for p in ConflictPolicy if p is not ConflictPolicy.MANUAL]


def hlc(wall_ms: int = EARLY, node: str = NODE) -> str:
    return f"{wall_ms:013d}.000000.{node}"


def change(kind: SyncChangeKind = SyncChangeKind.UPDATE, **fields: Any) -> Change:
    document: dict[str, Any] = {
        "change_id": str(uuid.uuid4()),
        "layer": "points",
        "global_id": str(GID),
        "kind": kind,
        "hlc": hlc(),
    }
    document.update(fields)
    return Change.model_validate(document)


def update(
    values: dict[str, Any],
    base: dict[str, Any],
    vector: dict[str, int],
    *,
    base_version: int = 1,
    at: int = EARLY,
) -> Change:
    return change(
        values=values,
        changed=list(base),
        base_values=base,
        version_vector=vector,
        base_version=base_version,
        hlc=hlc(at),
    )


def rules(**editing: Any) -> LayerRules:
    return LayerRules(ALL.model_copy(update=editing), True, ConflictPolicy.MANUAL)


# --- admission -----------------------------------------------------------------------------


def test_a_layer_outside_the_replica_is_refused() -> None:
    refused = admit(change(), RULES, in_replica=False)
    assert refused == Reject("layer 'points' is not part of this replica")


def test_a_layer_the_map_no_longer_has_is_refused() -> None:
    assert admit(change(), None, in_replica=True) == Reject("the map no longer has layer 'points'")


@pytest.mark.parametrize(
    ("kind", "editing", "reason"),
    [
        (SyncChangeKind.INSERT, {"create": False}, "the map does not allow adding to 'points'"),
        (SyncChangeKind.UPDATE, {"update": False}, "the map does not allow changing 'points'"),
        (
            SyncChangeKind.DELETE,
            {"delete": False},
            "the map does not allow deleting from 'points'",
        ),
    ],
)
def test_an_edit_the_map_does_not_allow_is_refused(
    kind: SyncChangeKind, editing: dict[str, bool], reason: str
) -> None:
    assert admit(change(kind), rules(**editing), in_replica=True) == Reject(reason)
    assert admit(change(kind), rules(), in_replica=True) == rules()


def test_only_editable_fields_may_be_set() -> None:
    narrow = rules(editable_fields=("a",))
    insert = change(SyncChangeKind.INSERT, values={"a": 1, "b": None, "geom": None})
    assert admit(insert, narrow, in_replica=True) == narrow  # null and the geometry pass
    edit = update({"a": 1, "b": 2}, {"a": 0, "b": 0}, {NODE: 1})
    assert admit(edit, narrow, in_replica=True) == Reject("field 'b' of 'points' is not editable")


def test_attachment_edits_need_attachments_and_updates() -> None:
    ref = AttachmentRef(
        attachment_id=uuid.uuid4(), name="a.jpg", content_type="image/jpeg", size=3,
        sha256="0" * 64,
    )  # fmt: skip
    add = change(SyncChangeKind.ATTACHMENT_ADD, attachment=ref)
    assert admit(add, rules(update=False), in_replica=True) == Reject(
        "the map does not allow attachment edits on 'points'"
    )
    off = LayerRules(ALL, attachments_enabled=False, policy=ConflictPolicy.MANUAL)
    assert isinstance(admit(add, off, in_replica=True), Reject)
    assert admit(add, RULES, in_replica=True, attachment_sync="none") == Reject(
        "this replica does not sync attachments"
    )
    assert admit(change(SyncChangeKind.ATTACHMENT_ADD), RULES, in_replica=True) == Reject(
        "an attachment change needs its attachment"
    )
    assert admit(add, RULES, in_replica=True, attachment_sync="upload") == RULES


# --- inserts -------------------------------------------------------------------------------


def test_an_insert_adds_the_row_with_the_devices_edit_counted() -> None:
    insert = change(SyncChangeKind.INSERT, values={"a": 1}, version_vector={NODE: 3})
    assert decide_insert(insert, NODE, None) == Apply(
        ChangeStatus.APPLIED, 1, {NODE: 3}, InsertRow({"a": 1})
    )
    bare = change(SyncChangeKind.INSERT, values={"a": 1})
    assert decide_insert(bare, NODE, None) == Apply(
        ChangeStatus.APPLIED, 1, {NODE: 1}, InsertRow({"a": 1})
    )


def test_an_insert_found_as_it_was_sent_is_applied_again() -> None:
    insert = change(SyncChangeKind.INSERT, values={"a": 1})
    row = ServerRow(2, {NODE: 1, "server": 1}, {"a": 1})
    assert decide_insert(insert, NODE, row, {"a": 1}) == Apply(
        ChangeStatus.APPLIED, 2, {NODE: 1, "server": 1}
    )


def test_an_insert_over_another_row_is_refused() -> None:
    insert = change(SyncChangeKind.INSERT, values={"a": 1})
    row = ServerRow(1, {OTHER: 1}, {"a": 2})
    assert decide_insert(insert, NODE, row, {"a": 1}) == Reject(
        f"'points' has a row with global id {GID}"
    )


def test_an_insert_over_a_row_needs_its_values() -> None:
    insert = change(SyncChangeKind.INSERT, values={"a": 1})
    with pytest.raises(ValueError, match="needs the row's values"):
        decide_insert(insert, NODE, ServerRow(1, {}), {"a": 1})


# --- fast-forward --------------------------------------------------------------------------


def test_an_update_that_saw_every_edit_goes_in_as_it_is() -> None:
    edit = update({"a": 2, "b": 9}, {"a": 1}, {NODE: 2, "server": 1})
    decision = decide_existing(edit, NODE, ServerRow(3, {NODE: 1, "server": 1}))
    assert decision == Apply(
        ChangeStatus.APPLIED, 4, {NODE: 2, "server": 1}, UpdateRow({"a": 2}, 3)
    )


def test_an_update_of_no_fields_writes_nothing_but_counts_the_edit() -> None:
    edit = update({"a": 2}, {}, {NODE: 2})
    decision = decide_existing(edit, NODE, ServerRow(3, {NODE: 1}))
    assert decision == Apply(ChangeStatus.APPLIED, 3, {NODE: 2})


def test_a_delete_that_saw_every_edit_deletes() -> None:
    delete = change(SyncChangeKind.DELETE, version_vector={NODE: 1, "server": 2})
    decision = decide_existing(delete, NODE, ServerRow(5, {"server": 2}))
    assert decision == Apply(ChangeStatus.APPLIED, None, None, DeleteRow(5))


@given(
    server=st.dictionaries(st.sampled_from(["server", OTHER]), st.integers(0, 5)),
    own=st.integers(0, 5),
    device=st.integers(0, 6),
    extra=st.integers(0, 3),
)
def test_an_edit_is_concurrent_exactly_when_the_device_missed_an_edit(
    server: dict[str, int], own: int, device: int, extra: int
) -> None:
    """The device's vector, less its own new edit, against the row's (``own`` of the device's
    edits, and the server's and another device's): seen everything, or missed something
    (``extra`` > 0 drops some of the server's edits from what the device saw)."""
    row_vector = {**server, NODE: own}
    seen = {k: max(v - extra, 0) if k == "server" else v for k, v in server.items()}
    edit = update({"a": 2}, {"a": 1}, {**seen, NODE: device})
    decision = decide_existing(edit, NODE, ServerRow(9, row_vector))
    missed = max(device - 1, 0) < own or any(seen.get(k, 0) < v for k, v in server.items())
    assert isinstance(decision, Concurrent) == missed
    if not missed:
        assert isinstance(decision, Apply)
        assert decision.status is ChangeStatus.APPLIED
        assert decision.write == UpdateRow({"a": 2}, 9)


# --- stale and forged bases ------------------------------------------------------------------


def test_a_base_version_newer_than_the_servers_is_refused() -> None:
    edit = update({"a": 2}, {"a": 1}, {NODE: 1}, base_version=4)
    assert decide_existing(edit, NODE, ServerRow(3, {})) == Reject(
        "base version 4 is newer than the server's 3: forged, or from another server"
    )


def test_a_vector_claiming_edits_the_server_never_had_is_refused() -> None:
    edit = update({"a": 2}, {"a": 1}, {NODE: 1, OTHER: 2})
    assert decide_existing(edit, NODE, ServerRow(3, {OTHER: 1})) == Reject(
        f"the version vector claims edits the server never had ({OTHER})"
    )


def test_a_stale_base_is_merged_not_refused() -> None:
    """A device that started from an older version than the server's is concurrent."""
    edit = update({"a": 2}, {"a": 1}, {NODE: 1}, base_version=1)
    row = ServerRow(3, {"server": 2})
    assert decide_existing(edit, NODE, row) == Concurrent(row)


# --- per-field merge -----------------------------------------------------------------------


def test_concurrent_edits_of_different_fields_both_stand() -> None:
    edit = update({"a": 2, "b": 1}, {"a": 1}, {NODE: 1})
    row = ServerRow(3, {"server": 2}, {"a": 1, "b": 5})
    client = edited_values(edit)
    base = base_values(edit, client)
    assert (client, base) == ({"a": 2}, {"a": 1})
    assert merge_update(edit, row, client, base) == Apply(
        ChangeStatus.MERGED, 4, {NODE: 1, "server": 2}, UpdateRow({"a": 2}, 3)
    )


def test_a_concurrent_edit_the_server_already_holds_writes_nothing() -> None:
    edit = update({"a": 2}, {"a": 1}, {NODE: 1})
    row = ServerRow(3, {"server": 2}, {"a": 2})
    assert merge_update(edit, row, {"a": 2}, {"a": 1}) == Apply(
        ChangeStatus.MERGED, 3, {NODE: 1, "server": 2}
    )


def test_a_field_changed_on_both_sides_is_a_conflict() -> None:
    edit = update({"a": 2, "b": 7}, {"a": 1, "b": 6}, {NODE: 1})
    row = ServerRow(3, {"server": 2}, {"a": 3, "b": 6})
    found = merge_update(edit, row, {"a": 2, "b": 7}, {"a": 1, "b": 6})
    assert found == FieldConflict(
        row, {NODE: 1, "server": 2}, {"b": 7}, ("a",), {"a": 1, "b": 6}, {"a": 2, "b": 7},
        {"a": 3, "b": 6},
    )  # fmt: skip


def _conflict(at: int = EARLY) -> tuple[Change, FieldConflict]:
    edit = update({"a": 2, "b": 7}, {"a": 1, "b": 6}, {NODE: 1}, at=at)
    row = ServerRow(3, {"server": 2}, {"a": 3, "b": 6})
    found = merge_update(edit, row, {"a": 2, "b": 7}, {"a": 1, "b": 6})
    assert isinstance(found, FieldConflict)
    return edit, found


def test_a_field_conflict_under_manual_is_parked() -> None:
    edit, found = _conflict()
    decision = settle_update(edit, found, ConflictPolicy.MANUAL, timestamp_from_ms(LATE, "server"))
    assert isinstance(decision, Park)
    assert (decision.version, decision.vector, decision.fields) == (3, {"server": 2}, ("a",))
    record = decision.conflict
    assert record.kind is ConflictKind.UPDATE_UPDATE
    assert (record.fields, record.base, record.client, record.server, record.server_version) == (
        ("a",),
        {"a": 1, "b": 6},
        {"a": 2, "b": 7},
        {"a": 3, "b": 6},
        3,
    )
    assert record.policy is ConflictPolicy.MANUAL


@pytest.mark.parametrize(
    ("policy", "client_at", "server_at", "a"),
    [
        (ConflictPolicy.SERVER_WINS, LATE, EARLY, 3),
        (ConflictPolicy.CLIENT_WINS, EARLY, LATE, 2),
        (ConflictPolicy.LAST_WRITER_WINS, LATE, EARLY, 2),
        (ConflictPolicy.LAST_WRITER_WINS, EARLY, LATE, 3),
        (ConflictPolicy.LAST_WRITER_WINS, EARLY, EARLY, 3),
    ],
)
def test_a_field_conflict_is_settled_by_the_policy(
    policy: ConflictPolicy, client_at: int, server_at: int, a: int
) -> None:
    edit, found = _conflict(client_at)
    # a tie on wall time: the server's node sorts first, so the server's state stands
    decision = settle_update(edit, found, policy, timestamp_from_ms(server_at, "server"))
    assert isinstance(decision, Apply)
    assert decision.status is ChangeStatus.MERGED
    assert decision.write == UpdateRow({"b": 7, "a": a}, 3)
    assert (decision.version, decision.vector) == (4, {NODE: 1, "server": 2})
    assert decision.conflict_fields == ("a",)
    assert decision.resolution is policy
    assert str(decision.reason).startswith(str(policy))
    assert decision.conflict is not None
    assert decision.conflict.policy is policy


# --- delete against update, both ways ------------------------------------------------------


def _delete_of_updated(at: int = EARLY) -> tuple[Change, ServerRow]:
    delete = change(
        SyncChangeKind.DELETE, version_vector={NODE: 1}, base_values={"a": 1}, hlc=hlc(at)
    )
    return delete, ServerRow(3, {"server": 2}, {"a": 5})


def test_a_delete_of_a_row_the_server_updated_is_concurrent() -> None:
    delete, row = _delete_of_updated()
    assert decide_existing(delete, NODE, ServerRow(3, {"server": 2})) == Concurrent(
        ServerRow(3, {"server": 2})
    )
    decision = delete_against_update(
        delete, row, ConflictPolicy.MANUAL, timestamp_from_ms(LATE, "server")
    )
    assert isinstance(decision, Park)
    assert (decision.version, decision.vector, decision.fields) == (3, {"server": 2}, ())
    record = decision.conflict
    assert record.kind is ConflictKind.DELETE_UPDATE
    assert (record.fields, record.base, record.client, record.server) == (
        (),
        {"a": 1},
        {},
        {"a": 5},
    )


def test_a_delete_that_wins_over_an_update_deletes() -> None:
    delete, row = _delete_of_updated()
    decision = delete_against_update(
        delete, row, ConflictPolicy.CLIENT_WINS, timestamp_from_ms(LATE, "server")
    )
    assert isinstance(decision, Apply)
    assert (decision.status, decision.version, decision.vector, decision.write) == (
        ChangeStatus.MERGED,
        None,
        None,
        DeleteRow(3),
    )
    assert decision.conflict is not None
    assert decision.conflict.kind is ConflictKind.DELETE_UPDATE


def test_an_update_that_wins_over_a_delete_keeps_the_row() -> None:
    delete, row = _delete_of_updated(LATE)
    decision = delete_against_update(
        delete, row, ConflictPolicy.SERVER_WINS, timestamp_from_ms(EARLY, "server")
    )
    assert decision == Apply(
        ChangeStatus.MERGED, 3, {NODE: 1, "server": 2}, None,
        conflict=decision.conflict if isinstance(decision, Apply) else None,
        resolution=ConflictPolicy.SERVER_WINS,
        reason="server_wins: the server's update stands, the client's delete is dropped",
    )  # fmt: skip


def test_an_update_of_a_row_the_server_deleted_is_a_conflict() -> None:
    edit = update({"a": 2, "b": 1}, {"a": 1}, {NODE: 2})
    deleted = DeletedRow(timestamp_from_ms(LATE, "server"), 3, {"server": 2, NODE: 1})
    decision = decide_gone(edit, ConflictPolicy.MANUAL, deleted, {"a": 2, "b": 1})
    assert isinstance(decision, Park)
    assert (decision.version, decision.vector, decision.fields) == (None, None, ())
    record = decision.conflict
    assert record.kind is ConflictKind.UPDATE_DELETE
    assert (record.fields, record.base, record.client, record.server) == (
        ("a",),
        {"a": 1},
        {"a": 2, "b": 1},
        None,
    )


@pytest.mark.parametrize(
    ("policy", "client_at", "revived"),
    [
        (ConflictPolicy.CLIENT_WINS, EARLY, True),
        (ConflictPolicy.SERVER_WINS, LATE, False),
        (ConflictPolicy.LAST_WRITER_WINS, LATE, True),
        (ConflictPolicy.LAST_WRITER_WINS, EARLY, False),
    ],
)
def test_an_update_of_a_deleted_row_is_settled_by_the_policy(
    policy: ConflictPolicy, client_at: int, revived: bool
) -> None:
    middle = (EARLY + LATE) // 2
    edit = update({"a": 2, "b": 1}, {"a": 1}, {NODE: 2, "server": 1}, at=client_at)
    # as deleted, the row had edits the device never saw (other devices may hold it so)
    deleted = DeletedRow(timestamp_from_ms(middle, "server"), 3, {"server": 2, OTHER: 1})
    decision = decide_gone(edit, policy, deleted, {"a": 2, "b": 1})
    assert isinstance(decision, Apply)
    assert decision.status is ChangeStatus.MERGED
    assert decision.resolution is policy
    assert decision.conflict is not None
    if revived:  # it goes on from the version and vector it was deleted at
        assert (decision.version, decision.vector) == (4, {NODE: 2, OTHER: 1, "server": 2})
        assert decision.write == InsertRow({"a": 2, "b": 1}, 4)
    else:
        assert (decision.version, decision.vector, decision.write) == (None, None, None)


def test_a_row_the_server_never_had_is_refused_and_a_deleted_one_deletes_again() -> None:
    delete = change(SyncChangeKind.DELETE)
    assert decide_gone(delete, ConflictPolicy.MANUAL, None) == Reject(f"'points' has no row {GID}")
    deleted = DeletedRow(timestamp_from_ms(EARLY, "server"), 2, {"server": 2})
    assert decide_gone(delete, ConflictPolicy.MANUAL, deleted) == Apply(
        ChangeStatus.APPLIED, None, None
    )


# --- attachments ---------------------------------------------------------------------------

REF = AttachmentRef(
    attachment_id=uuid.UUID(int=1), name="a.jpg", content_type="image/jpeg", size=10,
    sha256="0" * 64,
)  # fmt: skip


def _attachment(kind: SyncChangeKind, **facts: Any) -> Apply | Reject:
    arguments: dict[str, Any] = {
        "exists": False,
        "row_exists": True,
        "max_bytes": 100,
        "uploaded_size": 10,
    }
    arguments.update(facts)
    return decide_attachment(change(kind, attachment=REF), **arguments)


def test_an_attachment_is_added_when_its_bytes_are_there() -> None:
    assert _attachment(SyncChangeKind.ATTACHMENT_ADD) == Apply(
        ChangeStatus.APPLIED, None, None, AddAttachment(REF)
    )


def test_adding_an_attachment_the_server_has_is_applied_with_nothing_to_do() -> None:
    assert _attachment(SyncChangeKind.ATTACHMENT_ADD, exists=True) == Apply(
        ChangeStatus.APPLIED, None, None
    )


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        ({"row_exists": False}, f"'points' has no row {GID} any more"),
        ({"max_bytes": 9}, "attachment of 10 bytes is over the limit of 9"),
        ({"uploaded_size": None}, f"the bytes of attachment {'0' * 64} were not uploaded"),
        ({"uploaded_size": 11}, f"attachment {'0' * 64} is not 10 bytes"),
    ],
)
def test_an_attachment_that_cannot_be_added_is_refused(facts: dict[str, Any], reason: str) -> None:
    assert _attachment(SyncChangeKind.ATTACHMENT_ADD, **facts) == Reject(reason)


def test_an_attachment_is_deleted_when_the_server_has_it() -> None:
    assert _attachment(SyncChangeKind.ATTACHMENT_DELETE, exists=True) == Apply(
        ChangeStatus.APPLIED, None, None, DeleteAttachment(REF)
    )
    # the row may be gone: the attachment went with it, there is nothing to do
    assert _attachment(SyncChangeKind.ATTACHMENT_DELETE, row_exists=False) == Apply(
        ChangeStatus.APPLIED, None, None
    )


# --- properties ----------------------------------------------------------------------------

VALUES = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["x", "y"]))
FIELDS = st.sampled_from(["a", "b", "c"])


@given(
    base=st.dictionaries(FIELDS, VALUES, min_size=1),
    client_changes=st.dictionaries(FIELDS, VALUES),
    server_changes=st.dictionaries(FIELDS, VALUES),
    policy=st.sampled_from(list(ConflictPolicy)),
    client_first=st.booleans(),
)
def test_a_concurrent_update_writes_only_what_the_merge_and_policy_allow(
    base: dict[str, Any],
    client_changes: dict[str, Any],
    server_changes: dict[str, Any],
    policy: ConflictPolicy,
    client_first: bool,
) -> None:
    """Whatever the values: a field only the device changed is written, a field only the
    server changed is left alone, and a field both changed differently is parked (manual),
    or takes the winner's value."""
    client = {**base, **client_changes}
    server = {**base, **server_changes}
    edit = update(client, base, {NODE: 1}, at=EARLY if client_first else LATE)
    row = ServerRow(3, {"server": 2}, server)
    merged = merge_update(edit, row, {k: client[k] for k in base}, base)
    decision = merged
    if isinstance(merged, FieldConflict):
        server_time = timestamp_from_ms((EARLY + LATE) // 2, "server")
        decision = settle_update(edit, merged, policy, server_time)
    both = {k for k in base if base[k] != client[k] != server[k] != base[k]}
    if both and policy is ConflictPolicy.MANUAL:
        assert isinstance(decision, Park)
        assert set(decision.fields) == both
        return
    assert isinstance(decision, Apply)
    assert decision.status is ChangeStatus.MERGED
    written = decision.write.values if isinstance(decision.write, UpdateRow) else {}
    client_wins = policy is ConflictPolicy.CLIENT_WINS or (
        policy is ConflictPolicy.LAST_WRITER_WINS and not client_first
    )
    for name, before in base.items():
        if name in both:
            assert written[name] == (client[name] if client_wins else server[name])
        elif client[name] != before and server[name] == before:
            assert written[name] == client[name]
        else:
            assert name not in written
    assert set(decision.conflict_fields) == both
    assert (decision.conflict is not None) == bool(both)
