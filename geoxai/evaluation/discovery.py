"""Which evaluation plugins are installed, and what each declares (``geoxai plugins``).

Names come from the ``geoxai.plugins`` entry points without importing anything; describing a plugin
imports it, and one that fails to import is listed with its error instead of stopping the list.
"""

from __future__ import annotations

from typing import Any


def installed_plugins() -> list[dict[str, Any]]:
    """One entry per registered plugin: its ``Plugin.info()``, or ``{"name", "error"}`` when it fails to load."""
    from geoxai.evaluation.plugin import load_plugin
    from geoxai.registry import PLUGINS, registered

    found = []
    for name, entry_point in sorted(registered(PLUGINS).items()):
        try:
            info = load_plugin(name).info()
        except Exception as exc:  # a broken plugin is shown, not fatal to the listing
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            info = {"name": name, "error": text}
        info["entry_point"] = entry_point.value
        found.append(info)
    return found


def describe_plugins() -> str:
    """The text ``geoxai plugins`` prints."""
    entries = installed_plugins()
    if not entries:
        return "no evaluation plugins installed (entry-point group geoxai.plugins)"
    lines = []
    for info in entries:
        if "error" in info:
            lines.append(f"{info['name']}  FAILED TO LOAD ({info['entry_point']}): {info['error']}")
            continue
        lines.append(f"{info['name']} {info['version']}  {info['description']}")
        lines.append(f"    needs: {', '.join(info['needs']) or 'images only'}; pairings: {', '.join(info['pairings'])}")
        for metric, meta in info["metrics"].items():
            arrow = {True: " (higher is better)", False: " (lower is better)"}.get(meta["higher_is_better"], "")
            lines.append(f"    {metric}{arrow}: {meta['definition']}")
        for model in info["models"]:
            lines.append(f"    model: {model['name']} (licence: {model['licence']})")
    return "\n".join(lines)
