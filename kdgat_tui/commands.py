"""Command palette (ctrl+p): the actions valid on the current screen, from its live bindings (Posting's habit).

A binding hidden by `check_action` (e.g. Submit under --readonly) is not offered here either.
"""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

# Keys that are plumbing rather than actions a user looks for.
_SKIP_ACTIONS = {"command_palette", "quit", "app.quit"}


class ScreenCommands(Provider):
    def _commands(self) -> list[tuple[str, str, str, object]]:
        """(title, help, key, callback) for every enabled binding of the screen the palette was opened on."""
        out, seen = [], set()
        for key, active in self.screen.active_bindings.items():
            binding = active.binding
            if not active.enabled or binding.action in _SKIP_ACTIONS or not binding.description:
                continue
            title = binding.description
            if title in seen:
                continue
            seen.add(title)
            help_text = f"{binding.tooltip or binding.description}  [{key}]"
            out.append((title, help_text, key, partial(self.app.run_action, binding.action, active.node)))
        return out

    async def discover(self) -> Hits:
        for title, help_text, _key, callback in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, _key, callback in self._commands():
            score = max(matcher.match(title), matcher.match(help_text) * 0.8)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, text=title, help=help_text)
