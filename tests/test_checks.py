import numpy as np
import pytest

from microgradcnn._checks import check_int, is_int, is_real


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3)])
def test_check_int_accepts_integers(value):
    out = check_int(value, "size", "op")
    assert out == 3
    assert type(out) is int


@pytest.mark.parametrize("value", [True, 3.0, 3.7, "3", None, np.float32(2)])
def test_check_int_refuses_non_integers_naming_the_place(value):
    with pytest.raises(TypeError, match=r"op: size must be an int"):
        check_int(value, "size", "op")


def test_check_int_minimum():
    assert check_int(0, "n", "op", minimum=0) == 0
    with pytest.raises(ValueError, match=r"op: n must be at least 1, got 0"):
        check_int(0, "n", "op", minimum=1)


def test_predicates():
    assert is_int(np.int32(1))
    assert not is_int(True)
    assert not is_int(1.0)
    assert is_real(1.5)
    assert is_real(np.float32(1))
    assert is_real(2)
    assert not is_real(False)
    assert not is_real("1")
