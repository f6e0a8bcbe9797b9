"""Where a torch step's time goes: torch's profiler sums the self time of every aten operator the step runs, grouped
into matmuls, copies and indexing, and elementwise work (the rest).

A step's matmul time is what no rewrite of its elementwise work can remove: a reference step over another's matmul
time is the ceiling of their ratio.
"""
from torch.profiler import ProfilerActivity, profile

MATMUL_OPS = frozenset({"aten::mm", "aten::bmm", "aten::addmm", "aten::addmv", "aten::addmv_", "aten::mv",
                        "aten::baddbmm", "aten::addbmm", "aten::dot", "aten::vdot"})
COPY_OPS = frozenset({"aten::index_select", "aten::index", "aten::take", "aten::cat", "aten::copy_",
                      "aten::_index_put_impl_", "aten::scatter_add_", "aten::gather", "aten::clone",
                      "aten::stack", "aten::constant_pad_nd", "aten::fill_", "aten::zero_"})
CATEGORIES = ("matmul", "copies and indexing", "elementwise and other")


def category(op_name):
    """The group an aten operator's self time counts in, one of CATEGORIES."""
    if op_name in MATMUL_OPS:
        return CATEGORIES[0]
    return CATEGORIES[1] if op_name in COPY_OPS else CATEGORIES[2]


def op_breakdown(fn, rounds=3):
    """Seconds per call of ``fn`` in each of CATEGORIES, from the self CPU time of the aten operators it runs
    (a call that runs no torch operator, e.g. a numpy step, gives zeros)."""
    fn()  # the first call allocates; it is not the steady state
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(rounds):
            fn()
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            totals[category(event.key)] += event.self_cpu_time_total / 1e6 / rounds
    return totals


def breakdown_rows(label, fn, rounds=3):
    """(label, text) rows of ``fn``'s breakdown in milliseconds per call, and its matmul seconds."""
    totals = op_breakdown(fn, rounds)
    text = ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in totals.items())
    return [(f"{label}, time by operator", text)], totals[CATEGORIES[0]]
