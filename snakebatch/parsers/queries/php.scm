; PHP: definitions, `use` and `require` (captures: see snakebatch/parsers/treesitter.py).

(namespace_definition name: (namespace_name) @name) @definition.namespace
(class_declaration name: (name) @name) @definition.class
(interface_declaration name: (name) @name) @definition.interface
(trait_declaration name: (name) @name) @definition.trait
(enum_declaration name: (name) @name) @definition.enum
(function_definition name: (name) @name parameters: (formal_parameters) @params) @definition.function
(method_declaration name: (name) @name parameters: (formal_parameters) @params) @definition.method


; attributes: #[Route('/x')]
(_ attributes: (attribute_list (attribute_group (attribute) @decorator))) @decorated

; use App\Models\User;  use Foo\Bar as Baz;
(namespace_use_declaration
  (namespace_use_clause
    (qualified_name prefix: (namespace_name) @import.module (name) @import.name)
    alias: (name)? @import.alias)) @import
(namespace_use_declaration (namespace_use_clause . (name) @import.module .)) @import
; require 'x.php', require_once, include, include_once
(require_expression [(string (string_content) @import.module) (encapsed_string (string_content) @import.module)]) @import
(require_once_expression [(string (string_content) @import.module) (encapsed_string (string_content) @import.module)]) @import
(include_expression [(string (string_content) @import.module) (encapsed_string (string_content) @import.module)]) @import
(include_once_expression [(string (string_content) @import.module) (encapsed_string (string_content) @import.module)]) @import
