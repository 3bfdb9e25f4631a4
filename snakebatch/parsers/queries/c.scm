; C: definitions and includes (captures: see snakebatch/parsers/treesitter.py).
; Prototypes are declarations, not definitions: only functions with a body are rows.

(function_definition
  declarator: [(function_declarator declarator: (identifier) @name parameters: (parameter_list) @params)
               (pointer_declarator declarator: (function_declarator declarator: (identifier) @name parameters: (parameter_list) @params))
               (pointer_declarator declarator: (pointer_declarator declarator: (function_declarator declarator: (identifier) @name parameters: (parameter_list) @params)))]) @definition.function
(struct_specifier name: (type_identifier) @name body: (field_declaration_list)) @definition.struct
(union_specifier name: (type_identifier) @name body: (field_declaration_list)) @definition.union
(enum_specifier name: (type_identifier) @name body: (enumerator_list)) @definition.enum
; typedef struct { ... } name;
(type_definition type: (struct_specifier !name body: (field_declaration_list)) declarator: (type_identifier) @name) @definition.struct
(type_definition type: (enum_specifier !name body: (enumerator_list)) declarator: (type_identifier) @name) @definition.enum

; #include <stdio.h>, #include "util.h"
(preproc_include path: (_) @import.module) @import
