"""A third-party snakebatch parser for `*.todo` lists, registered through the entry point group
`snakebatch.parsers` (see pyproject.toml). The tests install it to check plugin discovery.

Each `- [ ] text` line is a definition of kind `task`; each `see: path` line an import.
"""

from snakebatch.parsers import Parser, ParseResult, count_lines


class TodoParser(Parser):
    name = "todo"
    patterns = ("*.todo",)
    version = "1.2.3"

    def parse(self, path: str, data: bytes) -> ParseResult:
        lines, code, comments, blank = count_lines(data)
        result = ParseResult(language="Todo", lines=lines, code_lines=code, comment_lines=comments,
                             blank_lines=blank)
        for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if line.startswith("- [ ] "):
                task = line[6:].strip()
                result.definitions.append(("task", task, task, None, number, number, 0, [], None, None))
            elif line.startswith("see: "):
                result.imports.append((line[5:].strip(), None, None, 0, number))
        return result
