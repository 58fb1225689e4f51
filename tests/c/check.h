/*
 * The check macros shared by the C test programs (test_api.c, test_diffusion.c, test_text.c): CHECK counts a
 * check and prints a FAIL line with file:line when it fails; EXPECT_OK checks that a call succeeded and left
 * no message behind; EXPECT_ERR that it failed with `want` and that mirage_last_error gives a message (its
 * return value its length) containing `needle` (may be ""). Each program prints `checks` and
 * `failures` at the end. Include it after <stdio.h>, <stdlib.h>, <string.h> and "mirage.h".
 */
#ifndef MIRAGE_TEST_CHECK_H
#define MIRAGE_TEST_CHECK_H

static int checks, failures;

#define CHECK(cond, ...)                                                                                        \
    do {                                                                                                        \
        checks++;                                                                                               \
        if (!(cond)) {                                                                                          \
            failures++;                                                                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                \
            fprintf(stderr, __VA_ARGS__);                                                                       \
            fputc('\n', stderr);                                                                                \
        }                                                                                                       \
    } while (0)

static char last_message[4096];

#define EXPECT_OK(call)                                                                                         \
    do {                                                                                                        \
        MirageStatus s_ = (call);                                                                               \
        size_t n_ = mirage_last_error(last_message, sizeof last_message);                                      \
        CHECK(s_ == MIRAGE_OK, "%s -> %s: %s", #call, mirage_status_str(s_), last_message);                    \
        CHECK(s_ != MIRAGE_OK || n_ == 0, "%s succeeded but left a message: %s", #call, last_message);         \
    } while (0)

#define EXPECT_ERR(call, want, needle)                                                                          \
    do {                                                                                                        \
        MirageStatus s_ = (call);                                                                               \
        size_t n_ = mirage_last_error(last_message, sizeof last_message);                                      \
        CHECK(s_ == (want), "%s -> %s (%u), expected %s: %s", #call, mirage_status_str(s_), s_,                 \
              mirage_status_str(want), last_message);                                                           \
        CHECK(n_ > 0 && strlen(last_message) == n_, "%s: no error message", #call);                            \
        CHECK(strstr(last_message, (needle)) != NULL, "%s: message lacks \"%s\": %s", #call, (needle),          \
              last_message);                                                                                    \
        if (getenv("TEST_API_VERBOSE")) printf("  %-60.60s %s: %s\n", #call, mirage_status_str(s_), last_message); \
    } while (0)

#endif
