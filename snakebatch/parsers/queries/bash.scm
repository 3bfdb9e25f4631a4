; Bash / Shell: functions and sourced files (captures: see snakebatch/parsers/treesitter.py).

(function_definition name: (word) @name) @definition.function

; source ./lib.sh, . ./lib.sh
(command
  name: (command_name (word) @_source (#any-of? @_source "source" "."))
  .
  argument: [(word) (string (string_content)) (raw_string)] @import.module) @import
