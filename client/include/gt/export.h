#pragma once
// GT_API marks the symbols libgt_client exports. The library is built with
// hidden visibility, so anything a program (or a test) calls across the
// library boundary carries this macro.

#if defined(__GNUC__) || defined(__clang__)
#define GT_API __attribute__((visibility("default")))
#else
#define GT_API
#endif
