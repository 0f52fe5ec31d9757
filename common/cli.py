"""The command line's parser: a mistake is one line that says how to fix it, never a usage block.

argparse prints the whole usage (50 lines for a train script) before its one useful line, and takes `--epoch 3`
as `--epochs 3`. `Parser` prints `error: <what> (did you mean --lr?)` alone and exits 2, as a UserError does, and
refuses abbreviations; `--help` still shows everything.
"""

import argparse
import difflib
import re
import sys


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _flags(self) -> list[str]:
        """This parser's long flags and its sub-commands' (unknown flags of a sub-command are reported here)."""
        flags = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        for a in self._actions:
            if isinstance(a, argparse._SubParsersAction):
                flags += [f for sub in a.choices.values() for f in sub._flags() if f not in flags]
        return flags

    def closest(self, flag: str) -> str | None:
        """The flag meant: a near spelling (--formt), an abbreviation (--epoch), or initials (--learning-rate)."""
        flags = self._flags()
        close = difflib.get_close_matches(flag, flags, n=1, cutoff=0.75)
        if close:
            return close[0]
        longer = [f for f in flags if f.startswith(flag)]
        if longer:
            return longer[0]
        initials = "--" + "".join(w[0] for w in flag.lstrip("-").split("-") if w)
        if initials in flags and len(initials) > 3:
            return initials
        close = difflib.get_close_matches(flag, flags, n=1, cutoff=0.6)
        return close[0] if close else None

    def hint(self, message: str) -> str:
        """' (did you mean X?)' for an unknown flag or a mistyped choice, else ''."""
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            close = self.closest(unknown.group(1).split("=", 1)[0])
            return f" (did you mean {close}?)" if close else " (`--help` lists the flags)"
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = re.findall(r"'([^']*)'", choice.group(2))
            close = difflib.get_close_matches(choice.group(1), options, n=1, cutoff=0.5)
            return f" (did you mean {close[0]}?)" if close else ""
        return ""

    def error(self, message: str):
        print(f"error: {self.prog.split()[-1] if self.prog else ''}: {message}{self.hint(message)}".replace(
            "error: : ", "error: "), file=sys.stderr)
        raise SystemExit(2)
