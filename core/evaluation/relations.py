"""Whether a relation a caption states holds in a scene (the rules are listed in ``core.evaluation.grounding``'s
docstring): the claim's phrases are matched to the scene's objects, and some choice of different objects must
satisfy it."""
import math

from core.shapes_world.spec import NEAR_REACH


def _holds(relation, first, second):
    """True iff the objects of ``first`` and ``second``, each (index in the scene's objects, as ``covers`` counts
    them; scene dict), satisfy ``a <relation> b``."""
    (i, a), (j, b) = first, second
    if relation in ("left", "right"):
        return a["x"] < b["x"] if relation == "left" else a["x"] > b["x"]
    if relation in ("above", "below"):
        return a["y"] < b["y"] if relation == "above" else a["y"] > b["y"]
    if relation == "next":
        return math.hypot(a["x"] - b["x"], a["y"] - b["y"]) <= NEAR_REACH * (a["r"] + b["r"])
    if relation == "top":
        return j in a.get("covers", ())
    if relation == "behind":
        return i in b.get("covers", ())
    raise ValueError(f"unknown relation {relation!r}")


def _matching(mention, objects, skip=()):
    """(index, object) of the objects matching ``mention``, leaving out the indices ``skip``."""
    return [(i, obj) for i, obj in enumerate(objects) if i not in skip and mention.matches(obj)]


def relation_holds(claim, objects):
    """True iff some object matching ``claim.a`` and a different one matching ``claim.b`` (and, for "between", a
    third matching ``claim.c``, a's centre between b's and c's left to right) satisfy it."""
    if claim.relation == "between":
        return claim.c is not None and any(
            min(b["x"], c["x"]) < a["x"] < max(b["x"], c["x"])
            for i, a in _matching(claim.a, objects) for j, b in _matching(claim.b, objects, (i,))
            for _, c in _matching(claim.c, objects, (i, j)))
    return any(_holds(claim.relation, a, b)
               for a in _matching(claim.a, objects) for b in _matching(claim.b, objects, (a[0],)))
