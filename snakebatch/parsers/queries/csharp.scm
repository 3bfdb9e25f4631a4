; C#: definitions and using directives (captures: see snakebatch/parsers/treesitter.py).

(namespace_declaration name: (_) @name) @definition.namespace
(file_scoped_namespace_declaration name: (_) @name) @definition.namespace
(class_declaration name: (identifier) @name) @definition.class
(struct_declaration name: (identifier) @name) @definition.struct
(interface_declaration name: (identifier) @name) @definition.interface
(enum_declaration name: (identifier) @name) @definition.enum
(record_declaration name: (identifier) @name) @definition.record
(method_declaration name: (identifier) @name parameters: (parameter_list) @params) @definition.method
(constructor_declaration name: (identifier) @name parameters: (parameter_list) @params) @definition.method
(local_function_statement name: (identifier) @name parameters: (parameter_list) @params) @definition.function


; attributes: [Obsolete("x")]
(_ (attribute_list (attribute) @decorator)) @decorated

; using System.Text;  using Json = System.Text.Json.JsonSerializer;
(using_directive . [(identifier) (qualified_name)] @import.module .) @import
(using_directive name: (identifier) @import.alias [(identifier) (qualified_name)] @import.module) @import
