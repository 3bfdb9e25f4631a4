; C++: definitions and includes (captures: see snakebatch/parsers/treesitter.py).
; Prototypes (and member declarations without a body) are not definitions; a member defined
; outside its class (`void Polygon::add()`) is a method whose parent is that class.

(function_definition
  declarator: [(function_declarator
                 declarator: [(identifier) (field_identifier) (destructor_name) (operator_name)] @name
                 parameters: (parameter_list) @params)
               (pointer_declarator
                 declarator: (function_declarator declarator: [(identifier) (field_identifier)] @name
                                                  parameters: (parameter_list) @params))
               (reference_declarator
                 (function_declarator declarator: [(identifier) (field_identifier)] @name
                                      parameters: (parameter_list) @params))]) @definition.function
(function_definition
  declarator: [(function_declarator
                 declarator: (qualified_identifier
                               scope: (_) @receiver
                               name: [(identifier) (destructor_name) (operator_name)] @name)
                 parameters: (parameter_list) @params)
               (pointer_declarator
                 declarator: (function_declarator
                               declarator: (qualified_identifier scope: (_) @receiver name: (identifier) @name)
                               parameters: (parameter_list) @params))
               (reference_declarator
                 (function_declarator
                   declarator: (qualified_identifier scope: (_) @receiver name: (identifier) @name)
                   parameters: (parameter_list) @params))]) @definition.function
(class_specifier name: (type_identifier) @name body: (field_declaration_list)) @definition.class
(struct_specifier name: (type_identifier) @name body: (field_declaration_list)) @definition.struct
(union_specifier name: (type_identifier) @name body: (field_declaration_list)) @definition.union
(enum_specifier name: (type_identifier) @name body: (enumerator_list)) @definition.enum
(namespace_definition name: (_) @name) @definition.namespace

; #include <vector>, #include "geometry.hpp"
(preproc_include path: (_) @import.module) @import
