; JavaScript: definitions and imports (captures: see snakebatch/parsers/treesitter.py).

(function_declaration name: (identifier) @name parameters: (formal_parameters) @params) @definition.function
(generator_function_declaration name: (identifier) @name parameters: (formal_parameters) @params) @definition.function
(class_declaration name: (identifier) @name) @definition.class
(method_definition name: (_) @name parameters: (formal_parameters) @params) @definition.method

; const f = () => {}, const f = function () {}
(variable_declarator
  name: (identifier) @name
  value: [(arrow_function parameters: (formal_parameters) @params)
          (function_expression parameters: (formal_parameters) @params)]) @definition.function
(variable_declarator
  name: (identifier) @name
  value: (arrow_function parameter: (identifier) @params)) @definition.function

; import x from 'm'  ->  name `default`, alias x
(import_statement (import_clause (identifier) @import.default) source: (string) @import.module) @import
; import {a, b as c} from 'm'
(import_statement
  (import_clause (named_imports (import_specifier name: (_) @import.name alias: (_)? @import.alias)))
  source: (string) @import.module) @import
; import * as ns from 'm'  ->  name `*`
(import_statement (import_clause (namespace_import "*" @import.name (identifier) @import.alias)) source: (string) @import.module) @import
; import 'm'
(import_statement . source: (string) @import.module) @import
; require('m')
(call_expression
  function: (identifier) @_require (#eq? @_require "require")
  arguments: (arguments . (string) @import.module .)) @import
