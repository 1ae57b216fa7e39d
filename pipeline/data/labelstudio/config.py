"""The Label Studio labeling config generated from a keypoint schema (docs/DESIGN.md §7).

One task shows one person instance: an ``Image``, a ``RectangleLabels`` box with the label ``person``, a
``KeyPointLabels`` control with one label per keypoint name (``model_index`` = the 0-based keypoint index, which Label
Studio's own COCO export needs) and a per-region ``Choices`` with the single choice ``occluded``. A keypoint placed
without the choice is COCO visibility 2, with it visibility 1; an absent keypoint is 0.

A person nobody boxed (one the instance finder missed) is added in the same task: a box with the label
``missed person`` and its keypoints from the second ``KeyPointLabels`` control (``kp_missed``, same names, any number
of uses); a missed person's keypoints are those inside its box (``annotations.added_people``).

The control names below are the contract between this config, ``pipeline.data.labelstudio.tasks`` and ``annotations``
(which write and read results by ``from_name``) and projects created by an earlier round: renaming one orphans every
existing project.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

from pipeline.keypoints import KeypointSchema
from pipeline.viz import side_colours

IMAGE_NAME = "image"  # the Image object tag; tasks carry the image URL in data["image"]
BOX_NAME = "box"  # RectangleLabels control
KEYPOINT_NAME = "kp"  # KeyPointLabels control
OCCLUDED_NAME = "occluded"  # per-region Choices control
PERSON_LABEL = "person"
ADDED_LABEL = "missed person"  # RectangleLabels label of a person the task did not box
ADDED_KEYPOINT_NAME = "kp_missed"  # KeyPointLabels control of the missed people's keypoints
OCCLUDED_CHOICE = "occluded"

OCCLUDED_HOTKEY = "o"  # sets ``occluded`` on the selected keypoint
PERSON_COLOUR, ADDED_COLOUR = "#ff00ff", "#ffd700"  # magenta / gold: apart from the keypoints' orange, blue, green
# The task's own line of text (``Header value="$note"``): what the model is least sure of (tasks.task_note).
NOTE_FIELD = "note"

# What an annotator reads above every task, and (as HTML) in the project's instructions. Label Studio's keyboard: a
# keypoint is selected by clicking it, deleted with Backspace; the hotkey below toggles its occluded choice.
INSTRUCTIONS = (
    "Correct the person in the magenta box only; other people in the picture have tasks of their own.",
    "Drag every keypoint to where it is. Keypoints are coloured by side: left orange, right blue, centre green.",
    "A joint hidden behind something but whose place you can tell: keep it there, select it and press "
    f"{OCCLUDED_HOTKEY.upper()} (occluded). A joint you cannot place at all (cut off by the image edge, or no clue "
    "where it is): select it and press Backspace.",
    "Move the box edges if they do not fit the person. No person in the box: delete every region, then Submit. "
    "Cannot tell: Skip.",
    f"Someone nobody boxed: draw a '{ADDED_LABEL}' box around them and place their keypoints from the second "
    "group of labels.",
)


# The one line above every image (the whole list is behind the editor's Instructions button): five lines of
# instructions above the image pushed a 256 px picture below the fold (issue #25's screenshots).
TASK_LINE = (
    f"Correct the person in the magenta box only. {OCCLUDED_HOTKEY.upper()}: the selected keypoint is occluded; "
    "Backspace: delete it. No person in the box: delete every region, Submit. All rules: Instructions (top right)."
)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


INSTRUCTIONS_START = "<p><b>One person per task.</b></p>"  # how poseloop's instructions begin, every version


def instructions_html() -> str:
    """The project's instructions (Label Studio's ``expert_instruction``), shown before the first task."""
    items = "".join(f"<li>{line}</li>" for line in INSTRUCTIONS)
    return f"{INSTRUCTIONS_START}<ul>{items}</ul>"


def labeling_config(schema: KeypointSchema) -> str:
    """The labeling config XML for ``schema`` (K keypoint labels, ``model_index`` 0..K-1 in schema order).

    ``maxUsages="1"`` on every label: one person box and each keypoint at most once per task, so the UI itself refuses
    the duplicates that pull would otherwise have to reject. The box cannot rotate (COCO boxes are axis-aligned).
    The ``occluded`` choice is shown while a keypoint region is selected (``whenTagName``) and has the hotkey
    ``OCCLUDED_HOTKEY``. Above the image: ``TASK_LINE`` and the task's ``note`` (which keypoints to check first);
    the whole ``INSTRUCTIONS`` are the project's instructions (``instructions_html``).
    Keypoints take the overlays' side colours (``pipeline.viz.side_colours``).
    """
    colours = [_hex(c) for c in side_colours(schema)]
    labels = "\n".join(
        f'    <Label value={quoteattr(name)} model_index={quoteattr(str(i))} maxUsages="1"'
        f" background={quoteattr(colours[i])}/>"
        for i, name in enumerate(schema.names)
    )
    added_labels = "\n".join(
        f"    <Label value={quoteattr(name)} model_index={quoteattr(str(i))} background={quoteattr(colours[i])}/>"
        for i, name in enumerate(schema.names)
    )
    return f"""<View>
  <Header value={quoteattr(TASK_LINE)} size="6"/>
  <Header value="${NOTE_FIELD}" size="5"/>
  <Image name="{IMAGE_NAME}" value="${IMAGE_NAME}" zoom="true" zoomControl="true"/>
  <RectangleLabels name="{BOX_NAME}" toName="{IMAGE_NAME}" canRotate="false" strokeWidth="3">
    <Label value="{PERSON_LABEL}" maxUsages="1" background="{PERSON_COLOUR}"/>
    <Label value="{ADDED_LABEL}" background="{ADDED_COLOUR}"/>
  </RectangleLabels>
  <KeyPointLabels name="{KEYPOINT_NAME}" toName="{IMAGE_NAME}" strokeWidth="1" opacity="0.9">
{labels}
  </KeyPointLabels>
  <Header value="A person nobody boxed: draw a '{ADDED_LABEL}' box, then place their keypoints from this group"/>
  <KeyPointLabels name="{ADDED_KEYPOINT_NAME}" toName="{IMAGE_NAME}" strokeWidth="1" opacity="0.6">
{added_labels}
  </KeyPointLabels>
  <Choices name="{OCCLUDED_NAME}" toName="{IMAGE_NAME}" perRegion="true" choice="multiple" showInline="true"
           visibleWhen="region-selected" whenTagName="{KEYPOINT_NAME}">
    <Choice value="{OCCLUDED_CHOICE}" hotkey="{OCCLUDED_HOTKEY}"/>
  </Choices>
</View>
"""


def keypoint_labels(label_config: str) -> list[str]:
    """The keypoint names of a labeling config's ``KeyPointLabels`` control, ordered by ``model_index``.

    Used to check that a project found by title was made for the same schema. Raises ValueError when the config has
    no ``KeyPointLabels`` named ``kp`` (a project poseloop did not create).
    """
    root = ET.fromstring(label_config)
    control = next((e for e in root.iter("KeyPointLabels") if e.get("name") == KEYPOINT_NAME), None)
    if control is None:
        raise ValueError(f"the labeling config has no <KeyPointLabels name={KEYPOINT_NAME!r}>")
    labels = [(int(e.get("model_index", i)), e.get("value", "")) for i, e in enumerate(control.iter("Label"))]
    return [name for _, name in sorted(labels)]
