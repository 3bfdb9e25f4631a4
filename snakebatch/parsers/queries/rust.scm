; Rust: definitions and imports (captures: see snakebatch/parsers/treesitter.py).

(function_item name: (identifier) @name parameters: (parameters) @params) @definition.function
(function_signature_item name: (identifier) @name parameters: (parameters) @params) @definition.function
(struct_item name: (type_identifier) @name) @definition.struct
(union_item name: (type_identifier) @name) @definition.union
(enum_item name: (type_identifier) @name) @definition.enum
(trait_item name: (type_identifier) @name) @definition.trait
(mod_item name: (identifier) @name body: (declaration_list)) @definition.module
(macro_definition name: (identifier) @name) @definition.macro
; impl Type / impl Trait for Type: names the methods inside, is not a definition itself
(impl_item type: [(type_identifier) @name
                  (generic_type type: (type_identifier) @name)
                  (scoped_type_identifier name: (type_identifier) @name)]) @scope

; use a::b::C;  use a::b::C as D;
(use_declaration argument: (scoped_identifier path: (_) @import.module name: (_) @import.name)) @import
(use_declaration
  argument: (use_as_clause path: (scoped_identifier path: (_) @import.module name: (_) @import.name)
                           alias: (_) @import.alias)) @import
; use serde;  use serde as s;
(use_declaration argument: (identifier) @import.module) @import
(use_declaration argument: (use_as_clause path: (identifier) @import.module alias: (_) @import.alias)) @import
; use a::b::{self, C, D as E};  use a::b::*;
(use_declaration
  argument: (scoped_use_list path: (_) @import.module
                             list: (use_list [(identifier) (self)] @import.name))) @import
(use_declaration
  argument: (scoped_use_list path: (_) @import.module
                             list: (use_list (use_as_clause path: (_) @import.name alias: (_) @import.alias)))) @import
(use_declaration argument: (use_wildcard (_) @import.module "*" @import.name)) @import
; extern crate foo;
(extern_crate_declaration name: (identifier) @import.module alias: (identifier)? @import.alias) @import
