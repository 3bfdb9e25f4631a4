; TypeScript and TSX: definitions and imports (captures: see snakebatch/parsers/treesitter.py).

(function_declaration name: (identifier) @name parameters: (formal_parameters) @params) @definition.function
(generator_function_declaration name: (identifier) @name parameters: (formal_parameters) @params) @definition.function
(function_signature name: (identifier) @name parameters: (formal_parameters) @params) @definition.function
(class_declaration name: (_) @name) @definition.class
(abstract_class_declaration name: (_) @name) @definition.class
(interface_declaration name: (_) @name) @definition.interface
(enum_declaration name: (_) @name) @definition.enum
(internal_module name: (_) @name) @definition.module
(method_definition name: (_) @name parameters: (formal_parameters) @params) @definition.method
(method_signature name: (_) @name parameters: (formal_parameters) @params) @definition.method
(abstract_method_signature name: (_) @name parameters: (formal_parameters) @params) @definition.method


; class decorators: @Injectable() (on the export statement when the class is exported)
(class_declaration decorator: (decorator) @decorator) @decorated
(export_statement decorator: (decorator) @decorator declaration: (_) @decorated)

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
; import {a, b as c} from 'm', import type {T} from 'm'
(import_statement
  (import_clause (named_imports (import_specifier name: (_) @import.name alias: (_)? @import.alias)))
  source: (string) @import.module) @import
; import * as ns from 'm'  ->  name `*`
(import_statement (import_clause (namespace_import "*" @import.name (identifier) @import.alias)) source: (string) @import.module) @import
; import 'm'
(import_statement . source: (string) @import.module) @import
; import fs = require('fs')
(import_statement (import_require_clause (identifier) @import.alias source: (string) @import.module)) @import
; require('m')
(call_expression
  function: (identifier) @_require (#eq? @_require "require")
  arguments: (arguments . (string) @import.module .)) @import
