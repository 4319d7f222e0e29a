"""The part of a Label Studio labelling config that an image classifier answers.

Label Studio describes a project's labelling interface in XML. activelab classifies whole images into
one of several classes, which in that XML is a single-choice ``<Choices name=... toName=...>`` tied to an
``<Image name=... value="$key">``::

    <View>
      <Image name="image" value="$image"/>
      <Choices name="label" toName="image" choice="single">
        <Choice value="T-shirt"/>
        <Choice value="Trouser"/>
      </Choices>
    </View>

:func:`parse_label_config` finds that pair and returns a :class:`LabelConfig`: the names a prediction
must carry (``from_name``, ``to_name``), the task data key holding the image URL (``image_key``) and the
class names in the order of the config, which is the order of the model's outputs. A class's name is its
``alias`` when it has one (Label Studio then stores the alias in annotations), else its ``value``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

from activelab.errors import ConfigError

_WANTED = ('a <Choices name=... toName=...> with at least two <Choice> classes tied to an '
           '<Image name=... value="$key">')


@dataclass(frozen=True)
class LabelConfig:
    """What activelab reads from and writes into a project: see the module docstring."""

    from_name: str
    to_name: str
    image_key: str
    classes: tuple[str, ...]

    def result(self, class_name: str) -> list[dict]:
        """The ``result`` list of a prediction or annotation choosing ``class_name`` for the image."""
        return [{"from_name": self.from_name, "to_name": self.to_name, "type": "choices",
                 "value": {"choices": [class_name]}}]

    def chosen_class(self, result: object) -> str | None:
        """The class an annotation's ``result`` list chose with this config's choices, or None when it chose
        none of them (another control, an empty or malformed result, a class no longer in the config)."""
        if not isinstance(result, list):
            return None
        for region in result:
            if not isinstance(region, dict) or region.get("from_name") != self.from_name:
                continue
            value = region.get("value")
            choices = value.get("choices") if isinstance(value, dict) else None
            if isinstance(choices, list) and len(choices) == 1 and choices[0] in self.classes:
                return choices[0]
        return None


def parse_label_config(xml: object) -> LabelConfig:
    """The image-classification part of the labelling config ``xml``; a :class:`ConfigError` when there is none.

    The first single-choice ``<Choices>`` whose ``toName`` names an ``<Image>`` with a ``$variable`` value is
    used; other controls in the config are left to people.
    """
    if not isinstance(xml, str) or not xml.strip():
        raise ConfigError(f"the labelling config is empty; activelab needs {_WANTED}.")
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as error:
        raise ConfigError(f"the labelling config is not valid XML ({error}).") from None
    images = {}
    for element in root.iter():
        value = element.get("value", "")
        if element.tag == "Image" and element.get("name") and value.startswith("$") and len(value) > 1:
            images[element.get("name")] = value[1:]
    problems = []
    for choices in root.iter("Choices"):
        name, target = choices.get("name"), choices.get("toName")
        if not name or target not in images:
            continue
        if choices.get("choice", "single") not in ("single", "single-radio"):
            problems.append(f'<Choices name="{name}"> allows several choices')
            continue
        classes = tuple(choice.get("alias") or choice.get("value") or "" for choice in choices.iter("Choice"))
        if "" in classes or len(set(classes)) != len(classes) or len(classes) < 2:
            problems.append(f'<Choices name="{name}"> needs at least two distinct non-empty <Choice> values')
            continue
        return LabelConfig(name, target, images[target], classes)
    found = f" ({'; '.join(problems)})" if problems else ""
    raise ConfigError(f"the labelling config has no image classification activelab can answer{found}; "
                      f"it needs {_WANTED}.")
