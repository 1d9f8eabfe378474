"""Building a config group's component (a task, a method) from its `_target_`, refusing settings
that the component does not take: a typo like `method.temprature=4` is an error that names it
(and the closest valid key), not a silently ignored key. Values are checked against the kinds the
constructor declares (kdx/knobs.py), before any work starts."""

import inspect
import typing

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from kdx.errors import KdxError
from kdx.knobs import check_value, unknown_key_fix


def settings_of(target) -> list[str] | None:
    """The keyword settings `target` accepts (None: it takes any, through **kwargs)."""
    parameters = inspect.signature(target).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def declared_kinds(target) -> dict[str, tuple[object, object]]:
    """{setting: (declared kind, default)} from `target`'s signature (Annotated ranges included)."""
    function = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception:   # an annotation this Python cannot evaluate: no declared kinds
        hints = {}
    return {p.name: (hints.get(p.name, inspect.Parameter.empty), p.default)
            for p in inspect.signature(target).parameters.values()}


def target_of(node: DictConfig, group: str):
    target_name = node.get("_target_")
    if target_name is None:
        raise KdxError(f"the {group} config has no _target_", f"name the class that builds the {group} in _target_")
    try:
        return get_class(target_name)
    except Exception as err:
        raise KdxError(f"{group}._target_={target_name!r} cannot be imported ({type(err).__name__})",
                       "check the dotted path of the class") from None


def check_component(node: DictConfig, group: str):
    """Refuses keys the `group` component does not take and values outside their declared kinds;
    returns the component's class."""
    target = target_of(node, group)
    allowed = settings_of(target)
    given = [k for k in node.keys() if not str(k).startswith("_")]
    unknown = [k for k in given if allowed is not None and k not in allowed]
    if unknown:
        raise KdxError(f"{', '.join(f'{group}.{k}' for k in unknown)}: not a setting of {group}="
                       f"{node.get('name', node.get('_target_'))} ({target.__name__})",
                       unknown_key_fix(f"{group}.{unknown[0]}", allowed))
    values = OmegaConf.to_container(node, resolve=True)
    kinds = declared_kinds(target)
    for key in given:
        kind, default = kinds.get(key, (inspect.Parameter.empty, inspect.Parameter.empty))
        check_value(f"{group}.{key}", values[key], kind, default)
    return target


def instantiate_component(node: DictConfig, group: str):
    """`instantiate(node)` for the `group` config (task, method), after checking its settings."""
    check_component(node, group)
    return instantiate(node, _recursive_=False)
