"""Building a config group's component (a task, a method) from its `_target_`, refusing settings
that the component does not take: a typo like `method.temprature=4` is an error that names it,
not a silently ignored key."""

import inspect

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from kdx.errors import KdxError


def settings_of(target) -> list[str] | None:
    """The keyword settings `target` accepts (None: it takes any, through **kwargs)."""
    parameters = inspect.signature(target).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def instantiate_component(node: DictConfig, group: str):
    """`instantiate(node)` for the `group` config (task, method), after checking its keys."""
    target_name = node.get("_target_")
    if target_name is None:
        raise KdxError(f"the {group} config has no _target_", f"name the class that builds the {group} in _target_")
    try:
        target = get_class(target_name)
    except Exception as err:
        raise KdxError(f"{group}._target_={target_name!r} cannot be imported ({type(err).__name__})",
                       "check the dotted path of the class") from None
    allowed = settings_of(target)
    given = [k for k in node.keys() if not str(k).startswith("_")]
    unknown = [k for k in given if allowed is not None and k not in allowed]
    if unknown:
        raise KdxError(f"{', '.join(f'{group}.{k}' for k in unknown)}: not a setting of {group}="
                       f"{node.get('name', target_name)} ({target.__name__})",
                       f"its settings are {sorted(allowed)}; check the spelling of the override")
    return instantiate(node, _recursive_=False)
