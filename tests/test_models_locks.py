"""Ticket-lock collapse model, MCS counterpart and the machine repairman."""

from math import factorial

import numpy as np
import pytest

from xbq.errors import XbqError
from xbq.models import mcs, repairman, repairman_state, ticket, ticket_queue


def test_repairman_closed_form_by_hand():
    # N=2, S=1, Z=2: weights 1, 2*(1/2), 2*1*(1/2)^2 = 1, 1, 1/2 -> p0 = 0.4
    st = repairman_state(2, 1.0, 2.0)
    np.testing.assert_allclose(st.probs, [0.4, 0.4, 0.2])
    assert st.throughput == pytest.approx(0.6e6)
    assert st.response == pytest.approx(2 / 0.6 - 2)
    assert repairman(2, 1.0, 2.0) == pytest.approx(0.6e6)


@pytest.mark.parametrize("a,s", [(10.0, 2.0), (3.0, 3.0), (50.0, 0.5)])
def test_ticket_with_zero_handoff_is_the_repairman(a, s):
    n = np.arange(1, 41)
    np.testing.assert_allclose(ticket(n, a, s, 0.0), repairman(n, s, a), rtol=1e-12)
    np.testing.assert_allclose(mcs(n, a, s, 0.0), repairman(n, s, a), rtol=1e-12)


def test_mcs_is_repairman_with_constant_handoff():
    n = np.arange(1, 30)
    np.testing.assert_allclose(mcs(n, 8.0, 2.0, 0.7), repairman(n, 2.7, 8.0), rtol=1e-12)


def test_ticket_matches_the_papers_product_form():
    n, a, s, c = 4, 6.0, 1.5, 0.8
    w = np.array([factorial(n) / factorial(n - k) / a**k *
                  np.prod([s + c * j / 2 for j in range(1, k + 1)]) for k in range(n + 1)])
    p = w / w.sum()
    C = float(np.sum(np.arange(n + 1) * p))
    assert ticket_queue(n, a, s, c) == pytest.approx(C, rel=1e-12)
    assert ticket(n, a, s, c) == pytest.approx((n - C) / a * 1e6, rel=1e-12)
    # one core: a + s + c/2 per cycle
    assert ticket(1, a, s, c) == pytest.approx(1e6 / (a + s + c / 2))


def test_ticket_collapses_while_mcs_saturates():
    n = np.arange(1, 65)
    tk = ticket(n, 20.0, 2.0, 1.0)
    mc = mcs(n, 20.0, 2.0, 1.0)
    assert tk.argmax() < 20 and tk[-1] < 0.5 * tk.max()
    assert np.all(np.diff(mc) >= -1e-9 * mc[1:])
    assert mc[-1] == pytest.approx(1e6 / 3.0, rel=1e-3)


def test_cap_limits_contenders():
    n = np.array([4, 16, 32, 64])
    x = ticket(n, 8.0, 9.0, 0.8, cap=16)
    assert x[2] == x[1] == x[3]
    assert x[0] == pytest.approx(ticket(4, 8.0, 9.0, 0.8))


def test_bad_lock_arguments():
    with pytest.raises(XbqError):
        ticket(4, 0.0, 1.0, 0.1)
    with pytest.raises(XbqError):
        ticket(2.5, 1.0, 1.0, 0.1)
    with pytest.raises(XbqError):
        mcs(4, 1.0, 0.0, 0.0)
