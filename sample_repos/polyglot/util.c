/* Utilities in C. */
#include <stdio.h>
#include <stdlib.h>
#include "util.h"

struct point {
    int x;
    int y;
};

enum color { RED, GREEN };

static int add(int a, int b) {
    return a + b;
}

char *greet(const char *name) {
    printf("hello %s\n", name);
    return NULL;
}

int main(void) {
    // call both
    greet("world");
    return add(1, 2);
}
