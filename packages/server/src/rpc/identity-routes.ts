import { create } from "@bufbuild/protobuf";
import { EmptySchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  CreateTokenResponseSchema,
  IdentityService,
  ListServiceAccountsRequestSchema,
  ListServiceAccountsResponseSchema,
  ListSigningKeysRequestSchema,
  ListSigningKeysResponseSchema,
  ListTokensRequestSchema,
  ListTokensResponseSchema,
  ListUsersRequestSchema,
  ListUsersResponseSchema,
  LoginResponseSchema,
  WhoAmIResponseSchema,
} from "@quantix/api/gen/Quantixkvm/identity/v1/identity_service_pb.js";
import { API_TOKEN_KIND, SERVICE_ACCOUNT_KIND, SIGNING_KEY_KIND, USER_KIND, type Kind, type Resource, type Store } from "@quantix/core";
import { peerKey, type Route } from "@quantix/rpc";
import { callerOf } from "../identity/principals.js";
import { apiRole } from "../identity/roles.js";
import type { TokenService } from "../identity/token-service.js";
import type { UserService } from "../identity/user-service.js";
import { ResourceReader, resourceRoute } from "../resources/index.js";

/**
 * Quantixkvm.identity.v1.IdentityService: every method has its own rules (the policy
 * table says who may call it; the handlers narrow: one's own user, password and tokens).
 * Ids are checked as the API token kind's (the route's kind), before any handler.
 */
export function identityServiceRoute(store: Store, users: UserService, tokens: TokenService): Route {
  const reader = <T extends Resource>(k: Kind<T>) => new ResourceReader(k as unknown as Kind<Resource>, store);
  const [userReader, saReader, tokenReader, keyReader] = [reader(USER_KIND), reader(SERVICE_ACCOUNT_KIND), reader(API_TOKEN_KIND), reader(SIGNING_KEY_KIND)];
  return resourceRoute(IdentityService, API_TOKEN_KIND as never, store, {
    impl: {
      login: async (req, ctx) => {
        const { token, expiresAtMs, user } = await users.login(req, ctx.values.get(peerKey).address);
        return create(LoginResponseSchema, { accessToken: token, expiresAt: timestampFromMs(expiresAtMs), user });
      },
      whoAmI: (_req, ctx) => {
        const p = callerOf(ctx);
        return create(WhoAmIResponseSchema, {
          principalKind: p.kind,
          id: p.id,
          name: p.name,
          systemAdmin: p.systemAdmin,
          projects: [...p.projects].sort(([a], [b]) => (a < b ? -1 : 1)).map(([projectId, role]) => ({ projectId, role: apiRole(role) })),
          tokenId: p.tokenId ?? "",
          scopes: [...(p.scopes ?? [])],
        });
      },
      createUser: (req, ctx) => users.createUser(req, callerOf(ctx)),
      getUser: (req, ctx) => users.getUser(req.id, callerOf(ctx)),
      listUsers: (req) => userReader.list(ListUsersRequestSchema, ListUsersResponseSchema, req) as never,
      deleteUser: async (req, ctx) => {
        await users.deleteUser(req.id, callerOf(ctx));
        return create(EmptySchema);
      },
      setPassword: async (req, ctx) => {
        await users.setPassword(req, callerOf(ctx), ctx.values.get(peerKey).address);
        return create(EmptySchema);
      },
      createServiceAccount: (req, ctx) => users.createServiceAccount(req, callerOf(ctx)),
      listServiceAccounts: (req) => saReader.list(ListServiceAccountsRequestSchema, ListServiceAccountsResponseSchema, req) as never,
      deleteServiceAccount: async (req) => {
        await users.deleteServiceAccount(req.id);
        return create(EmptySchema);
      },
      createToken: async (req, ctx) => {
        const { token, secret } = await tokens.create(req, callerOf(ctx));
        return create(CreateTokenResponseSchema, { token, secret });
      },
      listTokens: (req, ctx) => tokenReader.list(ListTokensRequestSchema, ListTokensResponseSchema, { ...req, ownerId: tokens.listOwner(req.ownerId, callerOf(ctx)) }) as never,
      revokeToken: (req, ctx) => tokens.revoke(req.id, callerOf(ctx)),
      rotateSigningKey: () => tokens.rotate(),
      listSigningKeys: (req) => keyReader.list(ListSigningKeysRequestSchema, ListSigningKeysResponseSchema, req) as never,
    },
  });
}
