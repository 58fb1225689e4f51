/*
 * The checks shared by the C++ test programs (test_header.cpp, test_text.cpp), as check.h is the C programs':
 * CHECK counts a failure and prints a FAIL line with file:line and the condition when `cond` is false;
 * expect_error runs `f`, which must throw mirage::Error with status `want` and a message (what() is
 * "<status>: <message>") containing `needle` (may be ""); main ends with `return summary("<program>")`.
 * Include it after "mirage.hpp"; C++11, as the wrapper.
 */
#ifndef MIRAGE_TEST_CHECK_HPP
#define MIRAGE_TEST_CHECK_HPP

#include <cstdio>
#include <cstring>

static int failures = 0;

#define CHECK(cond)                                                                                             \
    do {                                                                                                        \
        if (!(cond)) {                                                                                          \
            ++failures;                                                                                         \
            std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                \
        }                                                                                                       \
    } while (0)

template <class F>
static void expect_error(F f, MirageStatus want, const char *needle = "") {
    const char *name = mirage_status_str(want);
    try {
        f();
        ++failures;
        std::fprintf(stderr, "FAIL: no exception, expected %s (%s)\n", name, needle);
    } catch (const mirage::Error &e) {
        bool has_message = std::strlen(e.what()) > std::strlen(name) + 2;
        if (e.status() != want || !has_message || std::strstr(e.what(), needle) == nullptr) {
            ++failures;
            std::fprintf(stderr, "FAIL: expected %s with a message containing \"%s\", got %s\n", name, needle,
                         e.what());
        }
    }
}

// Prints "<program>: ok" and returns 0 when every check passed, else "<program>: <n> failures" and 1.
static int summary(const char *program) {
    if (failures) {
        std::printf("%s: %d failures\n", program, failures);
        return 1;
    }
    std::printf("%s: ok\n", program);
    return 0;
}

#endif
