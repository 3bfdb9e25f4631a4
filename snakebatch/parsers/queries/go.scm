; Go: definitions and imports (captures: see snakebatch/parsers/treesitter.py).

(function_declaration name: (identifier) @name parameters: (parameter_list) @params) @definition.function
; func (s *Server) Start(): the receiver's type is the parent
(method_declaration
  receiver: (parameter_list
    (parameter_declaration
      type: [(type_identifier) @receiver
             (pointer_type (type_identifier) @receiver)
             (generic_type type: (type_identifier) @receiver)
             (pointer_type (generic_type type: (type_identifier) @receiver))]))
  name: (field_identifier) @name
  parameters: (parameter_list) @params) @definition.method
(type_spec name: (type_identifier) @name type: (struct_type)) @definition.struct
(type_spec name: (type_identifier) @name type: (interface_type)) @definition.interface
(method_elem name: (field_identifier) @name parameters: (parameter_list) @params) @definition.method

; import "fmt", import f "fmt", import . "fmt", import _ "fmt"
(import_spec name: (_)? @import.alias path: (_) @import.module) @import
