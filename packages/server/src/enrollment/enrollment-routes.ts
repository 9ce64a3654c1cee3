import { create } from "@bufbuild/protobuf";
import { EmptySchema } from "@bufbuild/protobuf/wkt";
import { EnrollmentService as EnrollmentApi, ListJoinTokensResponseSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/enrollment_service_pb.js";
import { route, type Route } from "@quantix/rpc";
import type { EnrollmentService } from "./enrollment-service.js";

/** Quantixkvm.compute.v1.EnrollmentService, on every protocol. */
export function enrollmentServiceRoute(enrollment: EnrollmentService): Route {
  return route(EnrollmentApi, {
    createJoinToken: (req) => enrollment.createJoinToken(req),
    listJoinTokens: async (req) => create(ListJoinTokensResponseSchema, { joinTokens: await enrollment.list(req.nodeName) }),
    deleteJoinToken: async (req) => {
      await enrollment.delete(req.id);
      return create(EmptySchema);
    },
    enroll: (req) => enrollment.enroll(req),
  });
}
