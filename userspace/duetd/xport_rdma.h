/* SPDX-License-Identifier: MIT */
/*
 * xport_rdma — the RDMA transport (RC queue pairs set up with librdmacm),
 * behind the same ops table as TCP (xport.h). How it moves data, its
 * credits and its wire header: the top of xport_rdma.c and
 * docs/protocol.md, "RDMA transport".
 */
#ifndef DUET_XPORT_RDMA_H
#define DUET_XPORT_RDMA_H

#include "xport.h"

extern const struct xport_ops xport_rdma_ops;

#endif
