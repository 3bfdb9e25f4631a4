; Python, for files that `ast` rejects only (the `python` parser stays `ast`): definitions and

; imports that tree-sitter still finds around the syntax error.
; Captures: see snakebatch/parsers/treesitter.py.

(function_definition "async" name: (identifier) @name parameters: (parameters) @params) @definition.async_function
(function_definition name: (identifier) @name parameters: (parameters) @params) @definition.function
(class_definition name: (identifier) @name) @definition.class

; @decorator
(decorated_definition (decorator) @decorator definition: (_) @decorated)

; import a.b, import a.b as c
(import_statement name: (dotted_name) @import.module) @import
(import_statement name: (aliased_import name: (dotted_name) @import.module alias: (identifier) @import.alias)) @import
; from m import a, b as c, *
(import_from_statement module_name: (dotted_name) @import.module name: (dotted_name) @import.name) @import
(import_from_statement
  module_name: (dotted_name) @import.module
  name: (aliased_import name: (dotted_name) @import.name alias: (identifier) @import.alias)) @import
(import_from_statement module_name: (dotted_name) @import.module (wildcard_import) @import.name) @import
; from . import a, from ..m import b as c, *
(import_from_statement
  module_name: (relative_import (import_prefix) @import.level (dotted_name)? @import.module)
  name: (dotted_name) @import.name) @import
(import_from_statement
  module_name: (relative_import (import_prefix) @import.level (dotted_name)? @import.module)
  name: (aliased_import name: (dotted_name) @import.name alias: (identifier) @import.alias)) @import
(import_from_statement
  module_name: (relative_import (import_prefix) @import.level (dotted_name)? @import.module)
  (wildcard_import) @import.name) @import
