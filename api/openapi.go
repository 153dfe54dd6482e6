package api

import (
	_ "embed"
	"net/http"

	"github.com/gin-gonic/gin"
)

// openAPIDoc is the hand-written OpenAPI 3 description of every route;
// TestOpenAPICoversRoutes keeps it in step with the router.
//
//go:embed openapi.json
var openAPIDoc []byte

func openAPI(c *gin.Context) { c.Data(http.StatusOK, "application/json", openAPIDoc) }
