/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The device-state probe layer, all of it in one include for its consumers (the sidecar):
 * the stream walker (stream.h), the plugin ABI (probe-abi.h), the verdict model (verdict.h),
 * the registry (registry.h), and capture, discovery and reports (capture.h). A plugin needs
 * only probe-abi.h. */
#pragma once

#include "capture.h"
#include "probe-abi.h"
#include "registry.h"
#include "stream.h"
#include "verdict.h"
