"""The eight dihedral transforms of a picture, in Meta's words and Meta's order.

A phone's front camera mirrors the picture, and a re-broadcast can be flipped or turned
on purpose; PDQ survives blur and re-encoding but not that (a mirrored frame's hash lies
~128 bits from the original's). Meta's PDQ hashes all eight dihedral variants of a
picture from one DCT pass (``pdqDihedralHash256esFromFloatLuma``), and
``pdqhash.compute_dihedral`` returns them in that function's order, which is the order
of :data:`TRANSFORMS`. Meta's naming conventions (``pdq/cpp/io/pdqio.h``), with the
names StreamSafe writes:

=============  ==============  ==================================================
StreamSafe     Meta            the picture ...
=============  ==============  ==================================================
identity       Original        as it is
rotate90       Rotate90        turned 90 degrees counterclockwise
rotate180      Rotate180       turned 180 degrees
rotate270      Rotate270       turned 270 degrees counterclockwise (90 clockwise)
flipx          FlipX           with top and bottom swapped (flipped about the x axis)
flipy          FlipY           with left and right swapped: the mirror image
flip_plus1     FlipPlus1       with upper left and lower right kept, the other
                               corners swapped (flipped about that diagonal)
flip_minus1    FlipMinus1      with upper right and lower left kept, the other
                               corners swapped
=============  ==============  ==================================================

One name is read two ways, on purpose:

* A frame record's ``pdq_dihedral[T]`` is the PDQ hash of the frame transformed by
  ``T``: what ``compute_dihedral`` returns (Meta's reading).
* A match's ``transform`` (and a policy's ``pdq_transforms``) says how the frame shows
  the bank entry's picture: the frame *is* the entry's picture transformed by ``T``.
  When the variant ``V`` of a frame matched, the frame is the entry's picture under
  ``V``'s inverse (:func:`shown_as`): a frame turned 90 degrees counterclockwise
  matches through its ``rotate270`` variant and is reported as ``rotate90``. Only the
  two quarter turns differ from their inverses.
"""

from __future__ import annotations

__all__ = ["ALL", "IDENTITY", "ONLY_IDENTITY", "TRANSFORMS", "VARIANTS", "shown_as"]

IDENTITY = "identity"

TRANSFORMS: tuple[str, ...] = (IDENTITY, "rotate90", "rotate180", "rotate270", "flipx", "flipy",
                               "flip_plus1", "flip_minus1")
"""Meta's order: the order of ``pdqhash.compute_dihedral``'s hashes."""

VARIANTS: tuple[str, ...] = TRANSFORMS[1:]
"""The transforms a frame record's ``pdq_dihedral`` may carry (its ``pdq`` is the identity)."""

ALL: frozenset[str] = frozenset(TRANSFORMS)
ONLY_IDENTITY: frozenset[str] = frozenset({IDENTITY})

_INVERSE = {name: name for name in TRANSFORMS} | {"rotate90": "rotate270", "rotate270": "rotate90"}


def shown_as(variant: str) -> str:
    """How a frame shows an entry's picture when its ``variant`` hash matched the entry:
    the inverse transform (``rotate90`` and ``rotate270`` swap; the rest are their own)."""
    return _INVERSE[variant]
