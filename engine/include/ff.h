/* ff.h: the whole public C API of the Firefly engine. */
#ifndef FF_H
#define FF_H

#include "ff_base.h"
#include "ff_tensor.h"
#include "ff_rng.h"
#include "ff_ops.h"
#include "ff_autograd.h"
#include "ff_io.h"
#include "ff_data.h"
#include "ff_dist.h"
#include "ff_dist_reduce.h"

#define FF_VERSION "0.1.0"

#endif
