# Turns include/mirage.h into a C program that prints, one line each, every struct's size and field offsets
# and every constant:
#   "<Struct> size <sizeof>", "<Struct>.<field> <offsetof>", "const <MIRAGE_NAME> <value>"
# `MirageTests.exe --layout FILE` reads those lines and checks each against Marshal.SizeOf / Marshal.OffsetOf
# of the binding's struct of the same name (and that it has no other fields) and against the binding's enums
# and constants. Everything the header defines is listed, so a struct, field or constant added to the header
# and missing in Mirage.cs fails the check.
# Field lines are "type [*]name;" (one declaration per line, as cbindgen writes them); comments are skipped.
BEGIN {
    print "#include <stdio.h>"
    print "#include <stddef.h>"
    print "#include \"mirage.h\""
    print "int main(void) {"
}
/^typedef struct [A-Za-z0-9_]+ \{/ {
    name = $3
    fields = 0
    print "    printf(\"%s size %zu\\n\", \"" name "\", sizeof(" name "));"
    next
}
name != "" && /^\}/ {
    if (fields == 0) { print "#error no field parsed in " name; }
    name = ""
    next
}
name != "" && /;[ \t]*$/ && !/^[ \t]*(\/\*|\*)/ {
    line = $0
    sub(/;[ \t]*$/, "", line)
    sub(/\[.*\]$/, "", line)
    n = split(line, parts, /[ \t*]+/)
    field = parts[n]
    fields++
    print "    printf(\"%s.%s %zu\\n\", \"" name "\", \"" field "\", offsetof(" name ", " field "));"
}
# The header's numeric and string constants: "const <NAME> <value>" (numbers with %g).
/^#define MIRAGE_[A-Z0-9_]+[ \t]+[^ \t]/ {
    if ($3 ~ /^"/) print "    printf(\"const %s %s\\n\", \"" $2 "\", " $2 ");"
    else print "    printf(\"const %s %g\\n\", \"" $2 "\", (double)(" $2 "));"
}
END {
    print "    return 0;"
    print "}"
}
