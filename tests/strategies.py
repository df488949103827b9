"""Hypothesis strategies shared by the property-based tests.

How many examples each test tries comes from the hypothesis profile loaded
in conftest.py ("ci" by default, "long" with --hypothesis-profile=long).
"""

from hypothesis import settings
from hypothesis import strategies as st

from checks import FLOAT_DTYPES, MEMORY_KINDS
from reference import normalize_padding

LAYOUTS = ("NHWC", "NCHW")


def examples(scale):
    """``scale`` times the profile's max_examples (for a test whose examples
    are much cheaper or dearer than the typical one)."""
    return max(1, round(scale * settings.default.max_examples))


def _int_or_pair(values):
    return st.one_of(st.sampled_from(values),
                     st.tuples(st.sampled_from(values), st.sampled_from(values)))


@st.composite
def conv_configs(draw):
    """Keyword arguments of checks.check_conv: every kind of convolution
    (dense, grouped, depthwise with a multiplier), stride, dilation and
    padding form, layout, dtype, bias, ReLU, out= and strided inputs, on an
    image just large enough for a non-empty result (plus up to 9), and a
    seed for the values."""
    kind = draw(st.sampled_from(["dense", "grouped", "depthwise"]))
    if kind == "dense":
        groups, c_per_group, k_per_group = 1, draw(st.integers(1, 20)), draw(st.integers(1, 20))
    elif kind == "grouped":
        groups = draw(st.integers(2, 4))
        c_per_group, k_per_group = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    else:
        groups, c_per_group, k_per_group = draw(st.integers(1, 20)), 1, draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = draw(_int_or_pair([1, 2, 3]))
    dilation = draw(_int_or_pair([1, 2, 3]))
    padding = draw(st.one_of(
        st.integers(0, 3),
        st.tuples(st.integers(0, 3), st.integers(0, 3)),
        st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                  st.tuples(st.integers(0, 3), st.integers(0, 3))),
        st.sampled_from(["valid", "same"])))
    # Smallest image giving a non-empty result, then up to 9 more.
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    pads = normalize_padding(padding, (100, 100), (kh, kw), stride, dilation)
    if padding == "same":
        min_h = min_w = 1
    else:
        min_h = max(1, dh * (kh - 1) + 1 - sum(pads[0]))
        min_w = max(1, dw * (kw - 1) + 1 - sum(pads[1]))
    h = draw(st.integers(min_h, min_h + 9))
    w = draw(st.integers(min_w, min_w + 9))
    return dict(
        n=draw(st.sampled_from([None, 1, 2, 3])), h=h, w=w,
        c=groups * c_per_group, k=groups * k_per_group, kh=kh, kw=kw,
        stride=stride, padding=padding, dilation=dilation, groups=groups,
        bias=draw(st.booleans()), relu=draw(st.booleans()),
        use_out=draw(st.booleans()), strided_inputs=draw(st.booleans()),
        layout=draw(st.sampled_from(LAYOUTS)),
        dtype=draw(st.sampled_from(FLOAT_DTYPES)),
        seed=draw(st.integers(0, 2**32 - 1)))


def memory_kinds():
    """How an input array is held in memory (see checks.in_memory)."""
    return st.sampled_from(MEMORY_KINDS)


def dtypes():
    return st.sampled_from(FLOAT_DTYPES)


def seeds():
    return st.integers(0, 2**32 - 1)
