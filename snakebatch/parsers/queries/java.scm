; Java: definitions and imports (captures: see snakebatch/parsers/treesitter.py).

(class_declaration name: (identifier) @name) @definition.class
(interface_declaration name: (identifier) @name) @definition.interface
(enum_declaration name: (identifier) @name) @definition.enum
(record_declaration name: (identifier) @name) @definition.record
(annotation_type_declaration name: (identifier) @name) @definition.interface
(method_declaration name: (identifier) @name parameters: (formal_parameters) @params) @definition.method
(constructor_declaration name: (identifier) @name parameters: (formal_parameters) @params) @definition.method


; annotations: @Override, @SuppressWarnings("x")
(_ (modifiers [(marker_annotation) (annotation)] @decorator)) @decorated

; import a.b.C;  import static a.b.C.D;
(import_declaration (scoped_identifier scope: (_) @import.module name: (identifier) @import.name) .) @import
; import a.b.*;
(import_declaration (scoped_identifier) @import.module (asterisk) @import.name) @import
