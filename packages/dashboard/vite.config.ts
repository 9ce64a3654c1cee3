import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `vite build` writes dist/, which the control plane serves at / (docs/dashboard.md).
export default defineConfig({
  plugins: [react()],
  build: { outDir: "dist", emptyOutDir: true, sourcemap: true, chunkSizeWarningLimit: 2000 },
  server: { proxy: { "^/(Quantixkvm|grpc)\\.": "http://127.0.0.1:8080", "/v1": { target: "http://127.0.0.1:8080", ws: true } } },
});
