"""The Django internals after-commit delivery relies on (instant_signals/transactions.py), checked
on the Django version under test: CI runs this file under every supported Django."""

import django
import pytest
from django.db import connection, transaction

from instant_signals.transactions import FinalHook, Segment, current_segment, savepoint_state

pytestmark = pytest.mark.django_db(transaction=True)


def test_on_commit_hooks_are_sid_tuples_run_in_order():
    ran = []
    with transaction.atomic():
        connection.on_commit(lambda: ran.append("first"))
        entry = connection.run_on_commit[-1]
        assert len(entry) == 3 and isinstance(entry[0], set) and callable(entry[1])
        with transaction.atomic():
            connection.on_commit(lambda: ran.append("second"))
            assert connection.run_on_commit[-1][0] == set(connection.savepoint_ids)
    assert ran == ["first", "second"], django.get_version()


def test_savepoint_rollback_rebuilds_the_list_without_its_hooks():
    with transaction.atomic():
        connection.on_commit(lambda: None)
        before = connection.run_on_commit
        try:
            with transaction.atomic():
                connection.on_commit(lambda: None)
                raise RuntimeError
        except RuntimeError:
            pass
        assert connection.run_on_commit is not before  # a new list...
        assert len(connection.run_on_commit) == 1  # ...without the savepoint's hook


def test_segments_and_the_final_hook():
    order = []
    with transaction.atomic():
        outer = current_segment(connection)
        final = FinalHook(connection, lambda: order.append(
            ("final", outer.committed, inner.committed, dropped.committed)))
        assert savepoint_state(connection) == ()
        with transaction.atomic():
            inner = current_segment(connection)
            assert inner is not outer and len(inner.state) == 1
            final.move_to_end(connection)
        try:
            with transaction.atomic():
                dropped = current_segment(connection)
                final.move_to_end(connection)
                raise RuntimeError
        except RuntimeError:
            pass
        assert not dropped.alive() and inner.alive() and outer.alive()
        assert final.pending(connection)
        again = current_segment(connection)  # back in the outer state: a segment of its own
        assert again.state == () and again.alive() and again is not dropped
    assert order == [("final", True, True, False)]  # after every marker; the dropped one never ran
    assert not final.pending(connection)


def test_a_full_rollback_drops_every_hook():
    try:
        with transaction.atomic():
            segment = current_segment(connection)
            final = FinalHook(connection, lambda: pytest.fail("ran after a rollback"))
            raise RuntimeError
    except RuntimeError:
        pass
    assert not segment.alive() and not final.pending(connection)
    assert current_segment(connection) is None  # autocommit


def test_atomic_without_savepoint_is_no_state_of_its_own():
    with transaction.atomic():
        with transaction.atomic(savepoint=False):
            assert savepoint_state(connection) == ()
            assert isinstance(current_segment(connection), Segment)
